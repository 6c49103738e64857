"""BiGAN / ALI against hand values: the joint D loss, ALI's stochastic encoder, and the held-out metrics.

Networks are swapped for stubs whose outputs are known, so every loss and
metric below is computed by hand in the comment beside it.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.errors import ConfigError
from components.families import DataSpec, ImageBatch, RealSplit, build_family, get_family
from components.families.bigan import (ConvEncoder, GaussianConvEncoder, class_agreement, linear_probe_accuracy,
                                       reparameterise)

LN2, LN3 = math.log(2.0), math.log(3.0)
SPEC = DataSpec(channels=1, image_size=8, num_classes=4)


def tiny_bigan(**overrides):
    return build_family("bigan", SPEC, {**get_family("bigan").tiny, **overrides})


# --- stubs -------------------------------------------------------------------------------------


class MeanPlusFirstLatent(nn.Module):
    """D(x, z) = mean pixel of x + z[:, 0]; remembers every pair it scored."""

    def __init__(self):
        super().__init__()
        self.pairs: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        self.pairs.append((x, z))
        return x.flatten(1).mean(1) + z[:, 0]


class ConstantLatent(nn.Module):
    """E(x) = b for every image, b a learnable z_dim vector (zero to start)."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(z_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.b.expand(x.size(0), -1)


class ConstantImage(nn.Module):
    """G(z) = c everywhere, c a learnable scalar (zero to start)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.zeros(()))

    def forward(self, z: Tensor) -> Tensor:
        return self.c.expand(z.size(0), 1, 8, 8)


class Flatten(nn.Module):
    """E(x) = x's pixels as a vector: the latent is the image itself."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class PoolQuadrants(nn.Module):
    """E(x) = the four quadrant means: z_dim 4 as in the tiny config, and linearly separable by class."""

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, 2).flatten(1)


class KeepRows(nn.Module):
    """G(z) = z as an image on the rows of ``keep``, else a fixed image (row by row, so unchunked only)."""

    def __init__(self, keep: Tensor, other: Tensor):
        super().__init__()
        self.keep, self.other = keep, other

    def forward(self, z: Tensor) -> Tensor:
        images = z.view(-1, 1, 8, 8)
        return torch.where(self.keep.view(-1, 1, 1, 1), images, self.other.expand_as(images))


class FixedPosterior(nn.Module):
    """A stand-in for the encoder body: every image gets the same (mu, log sigma) outputs."""

    def __init__(self, mean: list[float], log_sigma: list[float]):
        super().__init__()
        self.row = torch.tensor([*mean, *log_sigma])

    def forward(self, x: Tensor) -> Tensor:
        return self.row.expand(x.size(0), -1)


def quadrant_images(labels: Tensor, seed: int = 0) -> Tensor:
    """8 x 8 images in [-1, 1]: dark noise, with the quadrant numbered by the label bright."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(len(labels), 1, 8, 8, generator=generator) * 0.4 - 1
    for image, label in zip(images, labels.tolist()):
        row, col = divmod(label, 2)
        image[0, 4 * row:4 * row + 4, 4 * col:4 * col + 4] += 1.5
    return images


def brightest_quadrant(images: Tensor) -> Tensor:
    """The evaluator's classifier stand-in: near one-hot on the brightest quadrant."""
    return torch.softmax(50 * F.adaptive_avg_pool2d(images, 2).flatten(1), dim=1)


def split(test_labels: Tensor | None = None, classify=brightest_quadrant) -> RealSplit:
    train_labels, true_test = torch.arange(40) % 4, torch.arange(8) % 4
    return RealSplit(quadrant_images(train_labels, 0), train_labels, quadrant_images(true_test, 1),
                     true_test if test_labels is None else test_labels, classify)


# --- losses on (x, E(x)) and (G(z), z) pairs ---------------------------------------------------


@pytest.fixture
def stubbed(monkeypatch):
    """A BiGAN whose prior gives z[:, 0] = ln 3 for both rows, with a two-image batch of mean ln 3 and 0."""
    family = tiny_bigan()
    z = torch.zeros(2, 4)
    z[:, 0] = LN3
    monkeypatch.setattr(family, "prior", lambda n, device=None: z[:n])
    nets = {"D": MeanPlusFirstLatent(), "E": ConstantLatent(4), "G": ConstantImage()}
    batch = ImageBatch(torch.stack([torch.full((1, 8, 8), LN3), torch.zeros(1, 8, 8)]))
    return family, nets, batch, z


def test_d_loss_calls_encoder_pairs_real_and_generator_pairs_fake(stubbed):
    family, nets, batch, z = stubbed
    loss, logs = family.discriminator_loss(batch, nets)
    # encoder pairs: logits ln 3 + 0 and 0 + 0 -> D = .75, .5 -> -log .75, -log .5
    # generator pairs: G(z) = 0, z[:, 0] = ln 3 -> D = .75 twice -> -log(1 - .75) = ln 4 each
    assert loss.item() == pytest.approx((math.log(4 / 3) + LN2) / 2 + math.log(4.0), rel=1e-6)
    assert logs["d_real"] == pytest.approx(0.625) and logs["d_fake"] == pytest.approx(0.75)
    (x_real, z_real), (x_fake, z_fake) = nets["D"].pairs
    assert torch.equal(x_real, batch.images) and torch.equal(z_real, torch.zeros(2, 4))  # (x, E(x))
    assert torch.equal(x_fake, torch.zeros(2, 1, 8, 8)) and torch.equal(z_fake, z)  # (G(z), z): the same z


def test_d_loss_does_not_train_encoder_or_generator(stubbed):
    family, nets, batch, _ = stubbed
    family.discriminator_loss(batch, nets)[0].backward()
    assert nets["E"].b.grad is None and nets["G"].c.grad is None


def test_encoder_and_generator_are_trained_on_the_flipped_labels(stubbed):
    family, nets, batch, _ = stubbed
    loss, logs = family.encoder_generator_loss(batch, nets)
    # encoder pairs as fake: -log(1 - .75) = ln 4, -log(1 - .5) = ln 2; generator pairs as real: -log .75 twice
    assert loss.item() == pytest.approx((math.log(4.0) + LN2) / 2 + math.log(4 / 3), rel=1e-6)
    assert logs["g_loss"] == pytest.approx(loss.item())
    assert logs["recon_mse"] == pytest.approx(LN3 ** 2 / 2, rel=1e-6)  # G(E(x)) = 0 against rows ln 3 and 0
    loss.backward()
    # d/db0 of mean softplus(logit_enc) = mean sigmoid(logit_enc) = (.75 + .5) / 2: E pushes its pairs to "fake"
    assert nets["E"].b.grad[0].item() == pytest.approx(0.625, rel=1e-6)
    # d/dc of mean softplus(-(c + ln 3)) = -(1 - .75): G pushes its pairs to "real"
    assert nets["G"].c.grad.item() == pytest.approx(-0.25, rel=1e-6)


# --- the ALI variant ---------------------------------------------------------------------------


def test_default_is_bigan_a_uniform_prior_and_a_deterministic_encoder():
    family = tiny_bigan()
    assert (family.config.prior, family.config.encoder) == ("uniform", "deterministic")
    assert type(family.nets["E"]) is ConvEncoder
    images = quadrant_images(torch.arange(4))
    assert torch.equal(family.nets["E"](images), family.nets["E"](images))


def test_ali_variant_draws_normal_latents_and_encodes_with_a_gaussian():
    family = tiny_bigan(prior="normal", encoder="gaussian")
    assert type(family.nets["E"]) is GaussianConvEncoder
    z = family.prior(4000)
    assert z.min() < -1 and z.max() > 1 and z.std().item() == pytest.approx(1.0, abs=0.05)


def test_an_unknown_encoder_is_refused():
    with pytest.raises(ConfigError, match="encoder"):
        tiny_bigan(encoder="variational")


def test_reparameterise_is_mean_plus_sigma_times_noise():
    mean, log_sigma = torch.tensor([1.0, -1.0], requires_grad=True), torch.tensor([0.0, LN2], requires_grad=True)
    z = reparameterise(mean, log_sigma, torch.tensor([0.5, 0.5]))
    assert torch.allclose(z, torch.tensor([1.5, 0.0]))  # 1 + 1 * .5, -1 + 2 * .5
    z.sum().backward()
    assert torch.allclose(mean.grad, torch.ones(2))  # gradients reach mu and sigma through the sample
    assert torch.allclose(log_sigma.grad, torch.tensor([0.5, 1.0]))  # sigma * eps


def test_gaussian_encoder_samples_in_training_and_gives_the_mean_in_eval():
    encoder = GaussianConvEncoder(1, 8, 8, 2)
    encoder.net = FixedPosterior(mean=[1.0, -2.0], log_sigma=[0.0, LN3])
    images = torch.zeros(20000, 1, 8, 8)
    torch.manual_seed(0)
    samples = encoder.train()(images)
    assert torch.allclose(samples.mean(0), torch.tensor([1.0, -2.0]), atol=0.05)
    assert torch.allclose(samples.std(0), torch.tensor([1.0, 3.0]), rtol=0.03)
    assert torch.equal(encoder.eval()(images[:3]), torch.tensor([[1.0, -2.0]] * 3))


def test_ali_phases_train_the_encoder_through_its_samples():
    family = tiny_bigan(prior="normal", encoder="gaussian")
    batch = ImageBatch(quadrant_images(torch.arange(8) % 4))
    nets = dict(family.nets.items())
    d_loss, _ = family.discriminator_loss(batch, nets)
    eg_loss, logs = family.encoder_generator_loss(batch, nets)
    assert math.isfinite(d_loss.item()) and math.isfinite(eg_loss.item()) and math.isfinite(logs["recon_mse"])
    eg_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in family.nets["E"].parameters())


# --- the linear probe --------------------------------------------------------------------------


def test_probe_on_separable_features_is_perfect():
    train_labels, test_labels = torch.arange(40) % 4, torch.arange(12) % 4
    accuracy = linear_probe_accuracy(F.one_hot(train_labels, 4).float(), train_labels,
                                     F.one_hot(test_labels, 4).float(), test_labels)
    assert accuracy == pytest.approx(1.0)


def test_probe_on_constant_features_is_at_chance():
    # every test row gets the same prediction, one class of four balanced ones: 3 of 12 right
    train_labels, test_labels = torch.arange(40) % 4, torch.arange(12) % 4
    accuracy = linear_probe_accuracy(torch.ones(40, 3), train_labels, torch.ones(12, 3), test_labels)
    assert accuracy == pytest.approx(0.25)


def test_probe_is_fit_on_the_train_rows_only():
    # the held-out features follow the next class: a probe fit on them would be perfect, one fit on train gets 0
    train_labels, test_labels = torch.arange(40) % 4, torch.arange(12) % 4
    accuracy = linear_probe_accuracy(F.one_hot(train_labels, 4).float(), train_labels,
                                     F.one_hot((test_labels + 1) % 4, 4).float(), test_labels)
    assert accuracy == 0.0


def test_task_metrics_probe_reads_encodings_of_train_and_held_out_images():
    family = tiny_bigan()
    family.nets["E"] = PoolQuadrants()
    assert family.task_metrics(split())["linear_probe_accuracy"] == pytest.approx(1.0)
    # held-out labels shifted by one class: the probe, fit on the train images, is wrong on every one
    assert family.task_metrics(split((torch.arange(8) + 1) % 4))["linear_probe_accuracy"] == 0.0


# --- reconstruction_class_agreement ------------------------------------------------------------


def test_class_agreement_is_the_fraction_whose_top_class_is_the_label():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert class_agreement(probabilities, torch.tensor([0, 1, 1, 0])) == pytest.approx(0.5)


def test_reconstruction_class_agreement_counts_reconstructions_of_the_right_class():
    # held-out labels 0 1 2 3 0 1 2 3; G(E(x)) = x on the first four rows (all agree), a quadrant-0 image on
    # the other four (only the row of label 0 agrees): 5 of 8
    family = tiny_bigan()
    real = split()
    keep = torch.tensor([True] * 4 + [False] * 4)
    family.nets["E"], family.nets["G"] = Flatten(), KeepRows(keep, quadrant_images(torch.tensor([0]), 2))
    scores = family.task_metrics(real)
    assert scores["reconstruction_class_agreement"] == pytest.approx(5 / 8)
    expected_mse = ((quadrant_images(torch.tensor([0]), 2) - real.test_images[4:]) ** 2).sum() / (8 * 64)
    assert scores["reconstruction_mse"] == pytest.approx(expected_mse.item(), rel=1e-5)


def test_reconstruction_class_agreement_is_one_for_a_perfect_inverse_and_needs_a_classifier():
    family = tiny_bigan()
    family.nets["E"], family.nets["G"] = Flatten(), KeepRows(torch.ones(8, dtype=torch.bool), torch.zeros(1, 8, 8))
    scores = family.task_metrics(split())
    assert scores["reconstruction_class_agreement"] == 1.0 and scores["reconstruction_mse"] == 0.0
    assert "reconstruction_class_agreement" not in family.task_metrics(split(classify=None))


def test_task_metrics_restore_the_training_mode():
    family = tiny_bigan()
    family.nets.train()
    family.task_metrics(split())
    assert family.nets.training and family.nets["E"].training
