"""Mechanism tests: each family's defining trick, pinned by a value worked out by hand.

The nets are replaced by stubs with chosen outputs where a loss is under test,
so the expected numbers come from the papers' formulas written out here with
``math``, not from the loss code being tested.
"""

import math

import pytest
import torch
from torch import Tensor, nn

from components import losses
from components.families import DataSpec, ImageBatch, build_family, get_family

MNIST_LIKE = DataSpec(channels=1, image_size=28, num_classes=3)
TINY_UNCONDITIONAL = {"z_dim": 8, "g_width": 4, "d_width": 4}


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def cross_entropy(logits: list[float], label: int) -> float:
    """-log softmax(logits)[label]."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# --- 1. AC-GAN: source BCE plus the auxiliary classifier's cross entropy -----------------------

# D's rows are [source logit, class logits...]; real images are all +1, fakes all -1, so the
# stub D can tell which batch it was handed without any learning.
REAL_SOURCE, FAKE_SOURCE = [1.0, -0.5], [-2.0, 0.3]
REAL_CLASS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
FAKE_CLASS = [[0.2, -1.0, 1.0], [1.0, 0.3, -0.4]]


class SignLookupDiscriminator(nn.Module):
    """Returns the real rows for a batch of +1 images and the fake rows for a batch of -1 images."""

    def forward(self, images: Tensor) -> Tensor:
        source, classes = (REAL_SOURCE, REAL_CLASS) if images.mean() > 0 else (FAKE_SOURCE, FAKE_CLASS)
        return torch.tensor([[s, *c] for s, c in zip(source, classes)])


class ConstantClassGenerator(nn.Module):
    """Makes -1 images and remembers the classes it was asked for."""

    def __init__(self):
        super().__init__()
        self.asked: list[Tensor] = []

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        self.asked.append(labels.clone())
        return -torch.ones(z.size(0), 1, 28, 28)


def acgan_with_stubs(monkeypatch, fake_labels: list[int]):
    """The ACGAN family whose G and D are the stubs and whose sampled fake classes are ``fake_labels``."""
    family = build_family("acgan", MNIST_LIKE, get_family("acgan").tiny)
    generator = ConstantClassGenerator()
    monkeypatch.setattr(family, "_random_labels", lambda n, device: torch.tensor(fake_labels))
    return family, {"G": generator, "D": SignLookupDiscriminator()}


def acgan_d_by_hand(real_labels, fake_labels) -> tuple[float, float]:
    """(-L_S, -L_C) for D: BCE on both sources, class cross entropy on real and fake images."""
    source = mean(softplus(-s) for s in REAL_SOURCE) + mean(softplus(s) for s in FAKE_SOURCE)
    classes = (mean(cross_entropy(row, y) for row, y in zip(REAL_CLASS, real_labels))
               + mean(cross_entropy(row, y) for row, y in zip(FAKE_CLASS, fake_labels)))
    return source, classes


def acgan_g_by_hand(fake_labels) -> float:
    """-log D(G(z, c)) (non-saturating L_S) plus the cross entropy of the classes G was asked for."""
    return (mean(softplus(-s) for s in FAKE_SOURCE)
            + mean(cross_entropy(row, y) for row, y in zip(FAKE_CLASS, fake_labels)))


@pytest.mark.parametrize("real_labels, fake_labels", [([0, 1], [2, 0]), ([1, 0], [0, 2])])
def test_acgan_discriminator_loss_is_source_bce_plus_class_cross_entropy(monkeypatch, real_labels, fake_labels):
    family, nets = acgan_with_stubs(monkeypatch, fake_labels)
    batch = ImageBatch(torch.ones(2, 1, 28, 28), torch.tensor(real_labels))
    loss, logs = family.discriminator_loss(batch, nets)
    source, classes = acgan_d_by_hand(real_labels, fake_labels)
    assert logs["d_source"] == pytest.approx(source, rel=1e-5)
    assert logs["d_class"] == pytest.approx(classes, rel=1e-5)
    assert loss.item() == pytest.approx(source + classes, rel=1e-5)


def test_acgan_class_term_depends_on_the_labels(monkeypatch):
    # the same logits scored against swapped labels: a loss that ignored labels (or used the
    # real labels for the fakes) would give equal values here
    family, nets = acgan_with_stubs(monkeypatch, [2, 0])
    right = family.discriminator_loss(ImageBatch(torch.ones(2, 1, 28, 28), torch.tensor([0, 1])), nets)[0]
    swapped = family.discriminator_loss(ImageBatch(torch.ones(2, 1, 28, 28), torch.tensor([1, 0])), nets)[0]
    expected_gap = sum(acgan_d_by_hand([1, 0], [2, 0])) - sum(acgan_d_by_hand([0, 1], [2, 0]))
    assert abs(expected_gap) > 0.5
    assert (swapped - right).item() == pytest.approx(expected_gap, rel=1e-5)


@pytest.mark.parametrize("fake_labels", [[2, 0], [0, 2]])
def test_acgan_generator_loss_scores_the_classes_it_asked_for(monkeypatch, fake_labels):
    family, nets = acgan_with_stubs(monkeypatch, fake_labels)
    loss, logs = family.generator_loss(ImageBatch(torch.ones(2, 1, 28, 28), torch.tensor([0, 1])), nets)
    assert loss.item() == pytest.approx(acgan_g_by_hand(fake_labels), rel=1e-5)
    assert [labels.tolist() for labels in nets["G"].asked] == [fake_labels]


def test_acgan_generator_class_term_changes_with_the_asked_class(monkeypatch):
    assert abs(acgan_g_by_hand([2, 0]) - acgan_g_by_hand([0, 2])) > 0.5
    values = []
    for fake_labels in ([2, 0], [0, 2]):
        family, nets = acgan_with_stubs(monkeypatch, fake_labels)
        values.append(family.generator_loss(ImageBatch(torch.ones(2, 1, 28, 28), torch.tensor([0, 1])), nets)[0])
    assert (values[0] - values[1]).item() == pytest.approx(acgan_g_by_hand([2, 0]) - acgan_g_by_hand([0, 2]),
                                                          rel=1e-5)


# --- 2. WGAN-GP: the gradient penalty at random points between real and fake ---------------------


class SquareCritic(nn.Module):
    """C(x) = sum(x^2) per sample, so grad C(x) = 2x and ||grad|| = 2||x||; remembers its inputs."""

    def __init__(self):
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x)
        return x.pow(2).flatten(1).sum(1)


def images(*rows: list[float]) -> Tensor:
    """A batch of 1 x 1 x W images, one per row."""
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), 1, 1, -1)


def test_interpolate_mixes_each_sample_with_its_own_alpha():
    real, fake = images([1.0, 2.0], [3.0, 4.0]), images([-1.0, 0.0], [5.0, -4.0])
    mixed = losses.interpolate(real, fake, torch.tensor([0.25, 0.9], dtype=torch.float64))
    # 0.25 [1, 2] + 0.75 [-1, 0] and 0.9 [3, 4] + 0.1 [5, -4]
    assert torch.allclose(mixed, images([-0.5, 0.5], [3.2, 3.2]))


def test_gradient_penalty_of_a_square_critic():
    # ||x|| = 0.5 -> gradient norm 1 -> (1 - 1)^2 = 0;  ||x|| = 2.5 -> norm 5 -> (5 - 1)^2 = 16
    points = torch.tensor([[0.25] * 4, [1.5, 2.0, 0.0, 0.0]], dtype=torch.float64).view(2, 1, 2, 2)
    assert losses.gradient_penalty(SquareCritic(), points).item() == pytest.approx(8.0)


def test_gradient_penalty_of_a_cubic_critic_uses_the_gradient_not_the_point():
    # grad sum(x^3) = 3x^2: [1, 0] -> norm 3 -> 4; [-1, 1] -> [3, 3], norm 3 sqrt 2, same as for [1, 1]
    def cubic(x):
        return x.pow(3).flatten(1).sum(1)

    expected = (4.0 + (3 * math.sqrt(2) - 1) ** 2) / 2
    assert losses.gradient_penalty(cubic, images([1.0, 0.0], [-1.0, 1.0])).item() == pytest.approx(expected)


def test_gradient_penalty_trains_the_critic():
    # C_w(x) = w sum(x^2): penalty = mean((2 w ||x|| - 1)^2), d/dw = mean(2 (2 w ||x|| - 1) 2 ||x||)
    class ScaledSquare(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.75, dtype=torch.float64))

        def forward(self, x):
            return self.w * x.pow(2).flatten(1).sum(1)

    critic = ScaledSquare()
    penalty = losses.gradient_penalty(critic, images([0.3, 0.4], [1.5, 2.0]))  # norms 0.5 and 2.5
    penalty.backward()
    assert penalty.item() == pytest.approx((0.25 ** 2 + 2.75 ** 2) / 2)
    assert critic.w.grad.item() == pytest.approx((2 * -0.25 * 1.0 + 2 * 2.75 * 5.0) / 2)


class FixedGenerator(nn.Module):
    def __init__(self, fake: Tensor):
        super().__init__()
        self.fake = fake

    def forward(self, z: Tensor) -> Tensor:
        return self.fake[: z.size(0)]


def wgan_gp_family():
    return build_family("wgan_gp", DataSpec(channels=1, image_size=28), TINY_UNCONDITIONAL)


def test_wgan_gp_critic_loss_penalises_at_the_interpolates(monkeypatch):
    # C = sum(x^2); alpha = 1/2 for both samples (so the mixing convention does not matter).
    # Scores: real 4, 2.25; fake 1, 6.25 -> E[C(fake)] - E[C(real)] = 0.5.
    # Gradient norms 2||x||: midpoints [0.5, 0], [0, 2] -> 1, 4 -> penalty (0 + 9) / 2 = 4.5.
    # The same penalty at the real points would be (9 + 4) / 2 = 6.5, at the fakes (1 + 16) / 2 = 8.5.
    real, fake = images([2.0, 0.0], [0.0, 1.5]), images([-1.0, 0.0], [0.0, 2.5])
    monkeypatch.setattr(torch, "rand", lambda *size, **kwargs: torch.tensor([0.5, 0.5], dtype=torch.float64))
    family = wgan_gp_family()
    loss, logs = family.critic_loss(ImageBatch(real), {"G": FixedGenerator(fake), "D": SquareCritic()})
    assert logs["gp"] == pytest.approx(4.5)
    assert logs["wasserstein"] == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(0.5 + family.config.gp_weight * 4.5)


def test_wgan_gp_penalty_points_lie_between_each_real_and_its_fake():
    torch.manual_seed(3)
    real, fake = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    critic = SquareCritic()
    _, logs = wgan_gp_family().critic_loss(ImageBatch(real), {"G": FixedGenerator(fake), "D": critic})
    (points,) = [x for x in critic.seen if x.requires_grad]  # the penalty's inputs, taken per sample
    direction, offset = (real - fake).flatten(1), (points.detach() - fake).flatten(1)
    fraction = (offset * direction).sum(1) / (direction * direction).sum(1)
    assert torch.allclose(offset, fraction[:, None] * direction)  # on the segment's line ...
    assert ((fraction > 0) & (fraction < 1)).all()  # ... strictly between its ends ...
    assert len(set(fraction.tolist())) == 4  # ... with a random mix drawn for every sample
    by_hand = ((2 * points.detach().flatten(1).norm(dim=1) - 1) ** 2).mean().item()
    assert logs["gp"] == pytest.approx(by_hand)


# --- 3. DCGAN's architecture rules (Radford et al. 2016) -----------------------------------------


def leaf_calls(module: nn.Module, *inputs: Tensor) -> list[tuple[nn.Module, tuple, tuple]]:
    """(leaf module, input shape, output shape) in the order the forward pass runs them."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, tuple(i[0].shape), tuple(o.shape))))
             for m in module.modules() if not list(m.children())]
    with torch.no_grad():
        module.eval()(*inputs)
    for hook in hooks:
        hook.remove()
    return calls


def layers(calls, conv_type) -> list[tuple[nn.Module, list[type]]]:
    """Splits the call order at each convolution: (conv, the types of what follows it up to the next)."""
    grouped = []
    for module, _, _ in calls:
        if isinstance(module, conv_type):
            grouped.append((module, []))
        else:
            grouped[-1][1].append(type(module))
    return grouped


def assert_only_convolutions_resample(calls):
    # no pooling or upsampling module, and no hidden functional resampling between leaves
    assert not [m for m, _, _ in calls if type(m).__module__.endswith(("pooling", "upsampling"))]
    for (_, _, previous_out), (_, next_in, _) in zip(calls, calls[1:]):
        assert next_in == previous_out
    assert all(i == o for m, i, o in calls if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def dcgan_nets(image_size: int):
    torch.manual_seed(0)
    family = build_family("dcgan", DataSpec(channels=1, image_size=image_size), TINY_UNCONDITIONAL)
    return family.nets["G"], family.nets["D"]


@pytest.mark.parametrize("image_size", [28, 32])
def test_dcgan_discriminator_follows_the_rules(image_size):
    _, discriminator = dcgan_nets(image_size)
    calls = leaf_calls(discriminator, torch.zeros(2, 1, image_size, image_size))
    assert_only_convolutions_resample(calls)
    assert not any(isinstance(m, nn.Linear) for m in discriminator.modules())  # no fully connected layer
    grouped = layers(calls, nn.Conv2d)
    first, *hidden, head = grouped
    assert hidden, "the size must give D at least one hidden layer, or the batch-norm rule is untested"
    assert first[1] == [nn.LeakyReLU]  # no batch norm on the input layer
    assert all(after == [nn.BatchNorm2d, nn.LeakyReLU] for _, after in hidden)
    assert head[1] == []  # raw logits: the BCE loss applies the sigmoid
    assert all(conv.stride == (2, 2) for conv, _ in grouped[:-1])  # strided convolutions downsample
    assert calls[-1][2] == (2, 1, 1, 1)  # the head projects the last map to one logit per image
    assert {m.negative_slope for m, _, _ in calls if isinstance(m, nn.LeakyReLU)} == {0.2}


@pytest.mark.parametrize("image_size", [28, 32])
def test_dcgan_generator_follows_the_rules(image_size):
    generator, _ = dcgan_nets(image_size)
    calls = leaf_calls(generator, torch.zeros(2, generator.z_dim))
    assert_only_convolutions_resample(calls)
    assert not any(isinstance(m, nn.Linear) for m in generator.modules())
    *body, output = layers(calls, nn.ConvTranspose2d)
    assert len(body) >= 2
    assert all(after == [nn.BatchNorm2d, nn.ReLU] for _, after in body)  # ReLU + batch norm on every hidden layer
    assert output[1] == [nn.Tanh]  # no batch norm on the output, tanh into [-1, 1]
    assert all(conv.stride == (2, 2) for conv, _ in body[1:] + [output])  # fractionally-strided upsampling
    assert calls[-1][2] == (2, 1, image_size, image_size)


# --- 4. WGAN-GP's critic has no batch norm ------------------------------------------------------


def leaks_across_samples(critic: nn.Module) -> bool:
    """Whether sample 0's score has a gradient with respect to sample 1's input (batch norm's coupling)."""
    x = torch.randn(3, 1, 32, 32, requires_grad=True)
    critic.train()(x)[0].backward()
    return bool(x.grad[1:].abs().max() > 0)


@pytest.mark.parametrize("critic_norm", ["layer", "none"])
def test_wgan_gp_critic_has_no_batch_norm(critic_norm):
    torch.manual_seed(0)
    overrides = dict(TINY_UNCONDITIONAL, critic_norm=critic_norm)
    critic = build_family("wgan_gp", DataSpec(channels=1, image_size=32), overrides).nets["D"]
    kinds = {type(m) for m in critic.modules()}
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert (nn.LayerNorm in kinds) == (critic_norm == "layer")
    assert not leaks_across_samples(critic)  # each sample's gradient norm is its own, as the penalty needs


def test_wgan_gp_critic_defaults_to_layer_norm():
    assert get_family("wgan_gp").Config().critic_norm == "layer"


def test_cross_sample_probe_detects_batch_norm():
    # control: the probe above does see batch norm, so its silence on the WGAN-GP critic means something
    from components.nets.dcgan import DCGANDiscriminator

    torch.manual_seed(0)
    assert leaks_across_samples(DCGANDiscriminator(1, 32, 4, norm="batch"))
