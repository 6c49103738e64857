"""InfoGAN: the codes' routing through G, Q and the losses, and the task metrics, against hand-computed values.

Stub networks make the expected numbers exact: an "echo" generator writes its
input vector into the image's first pixels and an "echo" Q reads the codes back
from there, so the information loss of a correctly routed step is known without
knowing which codes were drawn.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components.families import DataSpec, ImageBatch, RealSplit, build_family, get_family
from components.families.infogan import (matched_accuracy, projection_along_sweep, spearman_with_position,
                                         sweep_scores)
from components.losses import HALF_LOG_TWO_PI

SPEC = DataSpec(channels=1, image_size=8, num_classes=4)
LOG_TWO_PI = math.log(2 * math.pi)


def tiny(**overrides):
    torch.manual_seed(0)
    return build_family("infogan", SPEC, {**get_family("infogan").tiny, **overrides})


# --- stubs -----------------------------------------------------------------------------------------


class EchoGenerator(nn.Module):
    """G's input vector [z ‖ one-hot ‖ continuous] written into the first pixels of an 8 x 8 image."""

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return F.pad(latent, (0, 64 - latent.size(1))).view(-1, 1, 8, 8)


class EchoQ(nn.Module):
    """D's logit 0 for every image; Q's logits ln 4 x the one-hot it finds at the categorical's pixels and
    means equal to the values at the continuous codes' pixels."""

    def __init__(self, z_dim: int, categories: int, continuous: int):
        super().__init__()
        self.z_dim, self.categories, self.continuous = z_dim, categories, continuous

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = images.flatten(1)
        onehot = flat[:, self.z_dim:self.z_dim + self.categories]
        means = flat[:, self.z_dim + self.categories:self.z_dim + self.categories + self.continuous]
        return flat[:, 0] * 0.0, torch.cat([math.log(4) * onehot, means], dim=1)


def echo_nets(family):
    cfg = family.config
    return {"G": EchoGenerator(), "D": EchoQ(cfg.z_dim, cfg.categories, cfg.continuous_codes)}


def real_batch(n=64):
    return ImageBatch(torch.rand(n, 1, 8, 8) * 2 - 1)


# --- G's input and the priors -------------------------------------------------------------------


def test_generator_input_is_z_then_the_one_hot_categorical_then_the_continuous_values():
    family = tiny()  # z_dim 4, 3 categories, 2 continuous codes
    z = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    latent = family.generator_input(z, torch.tensor([2]), torch.tensor([[0.5, -0.25]]))
    assert torch.equal(latent, torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 1.0, 0.5, -0.25]]))


def test_codes_are_drawn_from_the_papers_priors():
    family = tiny(categories=10)
    torch.manual_seed(3)
    categorical, continuous = family.sample_codes(50_000, torch.device("cpu"))
    frequencies = torch.bincount(categorical, minlength=10).float() / 50_000
    assert frequencies.sub(0.1).abs().max() < 0.01  # Cat(K = 10, p = 0.1)
    assert continuous.shape == (50_000, 2) and continuous.min() >= -1 and continuous.max() <= 1
    assert continuous.mean(0).abs().max() < 0.02 and continuous.var(0).sub(1 / 3).abs().max() < 0.02  # U(-1, 1)


# --- the information loss ---------------------------------------------------------------------------


def test_information_loss_reads_logits_then_means_and_targets_the_generating_codes():
    family = tiny(lambda_categorical=1.0, lambda_continuous=0.5)
    q_out = torch.tensor([[math.log(2), 0.0, 0.0, 0.5, -1.0],
                          [0.0, math.log(3), 0.0, -0.5, 2.0]])
    loss, logs = family.information_loss(q_out, torch.tensor([0, 1]), torch.tensor([[0.5, 0.0], [0.5, 2.0]]))
    # cross-entropy: -ln(2/4) and -ln(3/5); Gaussian NLL with unit std: (0 + 1/2) and (1/2 + 0), plus ln(2 pi) per row
    categorical_nll = (math.log(2) + math.log(5 / 3)) / 2
    continuous_nll = 0.5 + LOG_TWO_PI
    assert loss.item() == pytest.approx(categorical_nll + 0.5 * continuous_nll, rel=1e-6)
    assert logs["mi_categorical"] == pytest.approx(math.log(3) - categorical_nll, rel=1e-6)
    assert logs["q_continuous_nll"] == pytest.approx(continuous_nll, rel=1e-6)


def test_information_loss_with_learned_std_reads_the_log_stds_after_the_means():
    family = tiny(lambda_categorical=1.0, lambda_continuous=0.5, learn_std=True)
    q_out = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, math.log(2), 0.0]])  # logits, means, log-stds
    loss, _ = family.information_loss(q_out, torch.tensor([2]), torch.tensor([[1.0, 1.0]]))
    # code 0: ((1 - 0) / 2)^2 / 2 + ln 2; code 1: 1/2 + 0; each + 0.5 ln(2 pi)
    continuous_nll = 0.125 + math.log(2) + 0.5 + 2 * HALF_LOG_TWO_PI
    assert loss.item() == pytest.approx(math.log(3) + 0.5 * continuous_nll, rel=1e-6)


def test_d_phase_trains_q_on_the_codes_that_generated_each_fake():
    family = tiny(lambda_categorical=1.0, lambda_continuous=0.5)
    torch.manual_seed(1)
    loss, logs = family.discriminator_loss(real_batch(), echo_nets(family))
    # D logits 0: softplus(0) on each side; Q reads the right codes: -ln(4/6) and a zero Gaussian residual
    info = math.log(1.5) + 0.5 * LOG_TWO_PI
    assert logs["d_adversarial"] == pytest.approx(2 * math.log(2), rel=1e-6)
    assert logs["info_loss"] == pytest.approx(info, rel=1e-6)
    assert loss.item() == pytest.approx(2 * math.log(2) + info, rel=1e-6)


def test_g_phase_adds_the_same_information_loss_on_its_own_fakes():
    family = tiny(lambda_categorical=1.0, lambda_continuous=0.5)
    torch.manual_seed(2)
    loss, logs = family.generator_loss(real_batch(), echo_nets(family))
    info = math.log(1.5) + 0.5 * LOG_TWO_PI
    assert logs["g_info"] == pytest.approx(info, rel=1e-6)
    assert loss.item() == pytest.approx(math.log(2) + info, rel=1e-6)


# --- where the information loss's gradient goes ----------------------------------------------------


def grads_of(loss, module):
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def test_information_loss_reaches_q_and_the_shared_trunk_but_not_the_real_fake_head():
    family = tiny()
    d = family.nets["D"]
    torch.manual_seed(4)
    _, q_out = d(torch.rand(8, 1, 8, 8) * 2 - 1)
    categorical, continuous = family.sample_codes(8, torch.device("cpu"))
    info, _ = family.information_loss(q_out, categorical, continuous)
    assert all(g is None for g in grads_of(info, d.d_head))
    for module in (d.q_head, d.body):  # Q's features are D's, not a detached copy
        grads = grads_of(info, module)
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_q_is_trained_by_the_d_optimizer_and_the_phases_update_d_then_g():
    family = tiny()
    optimizers = family.build_optimizers()
    d_params = {id(p) for group in optimizers["D"].param_groups for p in group["params"]}
    assert {id(p) for p in family.nets["D"].q_head.parameters()} <= d_params
    assert [(phase.name, phase.modules) for phase in family.phases()] == [("D", ("D",)), ("G", ("G",))]


def test_d_phase_makes_its_fakes_without_a_gradient_to_g():
    family = tiny()
    loss, _ = family.discriminator_loss(real_batch(8), family.nets)
    loss.backward()
    assert all(p.grad is None for p in family.nets["G"].parameters())
    assert all(p.grad is not None for p in family.nets["D"].q_head.parameters())


@pytest.mark.parametrize("lambdas, reaches_g", [((1.0, 0.1), True), ((0.0, 0.0), False)])
def test_information_loss_reaches_g_through_q(lambdas, reaches_g):
    family = tiny(lambda_categorical=lambdas[0], lambda_continuous=lambdas[1])
    d = family.nets["D"]
    with torch.no_grad():  # D's logit no longer depends on the image: only the information loss can move G
        d.d_head.weight.zero_()
        d.d_head.bias.zero_()
    d.requires_grad_(False)  # as the trainer freezes D in G's phase
    torch.manual_seed(5)
    loss, _ = family.generator_loss(real_batch(8), family.nets)
    loss.backward()
    grads = [p.grad for p in family.nets["G"].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads) == reaches_g


def test_networks_follow_the_papers_mnist_table():
    family = build_family("infogan", DataSpec(channels=1, image_size=28), {})
    g, d = family.nets["G"], family.nets["D"]
    assert g.project[0].in_features == 62 + 10 + 2
    assert [type(m) for m in g.project] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    assert g.project[3].out_features == 128 * 7 * 7
    assert [type(m) for m in g.net] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.ConvTranspose2d, nn.Tanh]
    assert [type(m) for m in d.body] == [nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU,
                                         nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.LeakyReLU]
    assert [m.out_channels for m in d.body if isinstance(m, nn.Conv2d)] == [64, 128]
    assert [type(m) for m in d.q_head] == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, nn.Linear]
    assert d.q_head[0].out_features == 128 and d.q_head[-1].out_features == 10 + 2
    assert d.d_head.in_features == d.q_head[0].in_features == 1024


# --- pure metric functions ---------------------------------------------------------------------------


def test_matched_accuracy_matches_codes_to_classes_one_to_one():
    # counts [[3, 1], [2, 0]]: a per-code argmax would send both codes to class 0 (5/6); one-to-one gives 3/6
    codes = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 0, 0])
    assert matched_accuracy(codes, predicted, 2, 2) == pytest.approx(0.5)
    # counts [[1, 2, 0], [2, 0, 0], [0, 0, 1]]: 0 -> 1, 1 -> 0, 2 -> 2
    assert matched_accuracy(np.array([0, 0, 0, 1, 1, 2]), np.array([1, 1, 0, 0, 0, 2]), 3, 3) == pytest.approx(5 / 6)


def test_spearman_with_position_by_hand():
    values = torch.tensor([[1.0, 3.0, 2.0],  # ranks 1 3 2: 1 - 6 * 2 / (3 * 8)
                           [3.0, 2.0, 1.0],
                           [5.0, 5.0, 5.0],  # no order at all
                           [1.0, 1.0, 2.0]])  # average ranks 1.5 1.5 3: 1.5 / sqrt(1.5 * 2)
    rho = spearman_with_position(values)
    assert rho.tolist() == pytest.approx([0.5, -1.0, 0.0, 1.5 / math.sqrt(3.0)])


def test_projection_along_sweep_measures_each_image_from_the_first_along_first_to_last():
    images = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [2.0, 0.0]]])  # one row, three 2-pixel "images"
    assert projection_along_sweep(images).tolist() == [[0.0, 2.0, 4.0]]  # direction (2, 0)


def test_sweep_scores_of_a_reversed_sweep_and_of_no_change():
    steps = torch.linspace(0, 1, 5).view(1, 5, 1, 1, 1)
    monotonicity, effect = sweep_scores(torch.cat([steps, steps.flip(1)]).expand(2, 5, 1, 2, 2))
    assert (monotonicity, effect) == pytest.approx((1.0, 1.0))  # |rho| of a decreasing code counts as monotone
    assert sweep_scores(torch.zeros(3, 5, 1, 2, 2)) == (0.0, 0.0)


# --- task metrics with stub generators ---------------------------------------------------------------


def quadrant_images(quadrants: torch.Tensor) -> torch.Tensor:
    """8 x 8 images at -1 with the numbered quadrant (0 top left, row by row) at +1."""
    images = -torch.ones(len(quadrants), 1, 8, 8)
    for image, quadrant in zip(images, quadrants.tolist()):
        row, col = divmod(quadrant, 2)
        image[0, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = 1.0
    return images


def brightest_quadrant(images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(50 * F.adaptive_avg_pool2d(images, 2).flatten(1), dim=1)


@pytest.fixture
def real() -> RealSplit:
    labels = torch.arange(40) % 4
    return RealSplit(quadrant_images(labels), labels, quadrant_images(labels), labels, brightest_quadrant)


class PaintCategorical(nn.Module):
    """Paints quadrant ``classes[code]`` for the categorical code read from G's input."""

    def __init__(self, z_dim: int, classes: list[int]):
        super().__init__()
        self.z_dim, self.classes = z_dim, torch.tensor(classes)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return quadrant_images(self.classes[latent[:, self.z_dim:self.z_dim + len(self.classes)].argmax(1)])


class PaintFromNoise(nn.Module):
    """Ignores the codes: the quadrant is the sign pattern of z's first two entries."""

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return quadrant_images((latent[:, 0] > 0).long() * 2 + (latent[:, 1] > 0).long())


class PaintContinuous(nn.Module):
    """Top half of the image = top(c_0), bottom half = bottom(c_1), for the continuous codes at G's input's end."""

    def __init__(self, top, bottom):
        super().__init__()
        self.top, self.bottom = top, bottom

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        top = self.top(latent[:, -2]).view(-1, 1, 1, 1).expand(-1, 1, 4, 8)
        bottom = self.bottom(latent[:, -1]).view(-1, 1, 1, 1).expand(-1, 1, 4, 8)
        return torch.cat([top, bottom], dim=2)


def four_code_family():
    return tiny(categories=4)


@pytest.mark.parametrize("classes, accuracy, nmi", [([2, 0, 3, 1], 1.0, 1.0),  # the code means the class
                                                    ([0, 0, 1, 1], 0.5, None),  # two codes per class
                                                    ([0, 0, 0, 0], 0.25, 0.0)])  # the code is ignored
def test_code_class_accuracy_by_hand(real, classes, accuracy, nmi):
    family = four_code_family()
    family.nets["G"] = PaintCategorical(family.config.z_dim, classes)
    scores = family.task_metrics(real, samples_per_code=10, sweep_rows=4)
    assert scores["code_class_accuracy"] == pytest.approx(accuracy)
    if nmi is not None:
        assert scores["code_class_nmi"] == pytest.approx(nmi, abs=1e-9)


def test_a_generator_that_ignores_the_code_scores_near_chance(real):
    family = four_code_family()
    family.nets["G"] = PaintFromNoise()
    torch.manual_seed(6)
    assert 0.25 <= family.task_metrics(real, samples_per_code=100, sweep_rows=4)["code_class_accuracy"] < 0.35


def test_continuous_code_metrics_by_hand(real):
    family = tiny()

    def wiggle(c):  # positions -2 .. 2 by 0.5 give ranks 4 2 1 3 5 7 9 8 6: rho = 1 - 6 * 28 / (9 * 80)
        return (c + 3 * torch.sin(math.pi * c / 2)) / 4

    family.nets["G"] = PaintContinuous(torch.tanh, wiggle)
    scores = family.task_metrics(real, samples_per_code=2, sweep_rows=5, sweep_steps=9)
    assert scores["continuous_code_monotonicity_0"] == pytest.approx(1.0)
    assert scores["continuous_code_effect_0"] == pytest.approx(math.tanh(2.0), rel=1e-6)  # 2 tanh 2 on half the image
    assert scores["continuous_code_monotonicity_1"] == pytest.approx(23 / 30)
    assert scores["continuous_code_effect_1"] == pytest.approx(0.5, rel=1e-6)  # (1 - (-1)) on half the image


def test_a_continuous_code_without_effect_scores_zero(real):
    family = tiny()
    family.nets["G"] = PaintContinuous(torch.tanh, torch.zeros_like)
    scores = family.task_metrics(real, samples_per_code=2, sweep_rows=5)
    assert scores["continuous_code_monotonicity_1"] == 0.0 and scores["continuous_code_effect_1"] == 0.0


def test_the_sweep_holds_z_and_the_categorical_fixed_along_each_row():
    family = tiny()
    family.nets["G"] = EchoGenerator()
    sweep = family.continuous_sweep(1, rows=3, steps=5).flatten(2)[..., :9]  # the echoed G inputs
    cfg = family.config
    fixed = sweep[..., :cfg.z_dim + cfg.categories + 1]  # z, one-hot and the other continuous code
    assert torch.equal(fixed, fixed[:, :1].expand_as(fixed))
    assert torch.equal(sweep[..., -1], torch.linspace(-2, 2, 5).expand(3, 5))


def test_task_metrics_of_an_untrained_tiny_family_are_in_range_and_leave_its_mode(real):
    family = tiny(categories=4)
    family.nets.train()
    scores = family.task_metrics(real, samples_per_code=5, sweep_rows=6)
    assert family.nets.training
    assert set(scores) == {"code_class_accuracy", "code_class_nmi", "continuous_code_monotonicity_0",
                           "continuous_code_effect_0", "continuous_code_monotonicity_1", "continuous_code_effect_1"}
    assert 0.25 <= scores["code_class_accuracy"] <= 1 and all(0 <= v <= 2 for v in scores.values())
