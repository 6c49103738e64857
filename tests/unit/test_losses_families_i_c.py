"""The K+1 semi-supervised and BiGAN losses against hand values, and what sgan and bigan add to the contract."""

import math

import pytest
import torch
from torch import nn

from components import losses
from components.errors import ConfigError
from components.families import DataSpec, ImageBatch, build_family

LN2, LN3 = math.log(2.0), math.log(3.0)
SPEC = DataSpec(channels=1, image_size=8, num_classes=3)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# --- losses ------------------------------------------------------------------------------------


def test_k_plus_one_supervised_loss_is_cross_entropy_over_k_plus_one_classes():
    # K = 2 plus fake. Row 1: softmax(ln2, 0, 0)[0] = 2/4 -> ln 2. Row 2: softmax(0, 0, 0)[1] = 1/3 -> ln 3.
    value = losses.k_plus_one_supervised_loss(t([LN2, 0.0, 0.0], [0.0, 0.0, 0.0]), torch.tensor([0, 1]))
    assert value.item() == pytest.approx((LN2 + LN3) / 2)


def test_k_plus_one_supervised_loss_without_labelled_images_is_zero_and_differentiable():
    logits = torch.zeros(0, 3, requires_grad=True)
    value = losses.k_plus_one_supervised_loss(logits, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert value.item() == 0.0 and logits.grad is not None


def test_k_plus_one_real_loss_is_minus_log_of_not_fake():
    # Row 1: p(fake) = 1 / (3 + 1 + 1) = 1/5 -> -log(4/5) = log 1.25. Row 2: p(fake) = 2 / (1 + 1 + 2) = 1/2 -> log 2.
    value = losses.k_plus_one_real_loss(t([LN3, 0.0, 0.0], [0.0, 0.0, LN2]))
    assert value.item() == pytest.approx((math.log(1.25) + LN2) / 2)


def test_k_plus_one_fake_loss_is_minus_log_of_fake():
    # Row 1: p(fake) = 1/5 -> log 5. Row 2: p(fake) = 1/2 -> log 2.
    value = losses.k_plus_one_fake_loss(t([LN3, 0.0, 0.0], [0.0, 0.0, LN2]))
    assert value.item() == pytest.approx((math.log(5.0) + LN2) / 2)


def test_k_plus_one_generator_loss_wants_fakes_called_real():
    # p(fake) = 1/5 -> -log(1 - 1/5) = log 1.25
    assert losses.k_plus_one_generator_loss(t([LN3, 0.0, 0.0])).item() == pytest.approx(math.log(1.25))


def test_k_plus_one_losses_stay_finite_for_confident_logits():
    logits = t([200.0, -200.0, -200.0], [-200.0, -200.0, 200.0])
    for loss in (losses.k_plus_one_real_loss, losses.k_plus_one_fake_loss):
        assert math.isfinite(loss(logits).item())


def test_bigan_encoder_generator_loss_inverts_the_labels():
    # D(x, E(x)) = 0.75 -> -log(1 - .75) = log 4; D(G(z), z) = 0.75 -> -log .75 = log 4/3
    value = losses.bigan_encoder_generator_loss(t(LN3), t(LN3))
    assert value.item() == pytest.approx(math.log(4.0) + math.log(4.0 / 3.0))
    # it is D's BCE with the sides swapped: generator pairs scored as real, encoder pairs as fake
    swapped = losses.bce_discriminator_loss(t(0.0), t(LN3)).item()
    assert losses.bigan_encoder_generator_loss(t(LN3), t(0.0)).item() == pytest.approx(swapped)


# --- sgan --------------------------------------------------------------------------------------


class ConstantLogits(nn.Module):
    """Every image gets the same K+1 logits."""

    def __init__(self, row):
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x):
        return self.row.expand(x.size(0), -1)


class ZeroGenerator(nn.Module):
    def forward(self, z):
        return torch.zeros(z.size(0), 1, 8, 8)


def stored_images(n, seed=0):
    """Images as the sampler makes them: uint8 pixels scaled to [-1, 1]."""
    pixels = torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
    return pixels.float() / 127.5 - 1


def test_sgan_reports_accuracy_on_flagged_rows_and_skips_supervision_without_flags():
    # which labels count and the loss's hand values: tests/unit/test_sgan.py
    family = build_family("sgan", SPEC)
    nets = {"G": ZeroGenerator(), "D": ConstantLogits([LN2, 0.0, 0.0, 0.0])}  # always predicts class 0
    images = stored_images(4)
    flags = torch.tensor([True, True, False, True])
    _, logs = family.discriminator_loss(ImageBatch(images, torch.tensor([0, 1, 0, 2]), labelled=flags), nets)
    assert logs["d_accuracy"] == pytest.approx(1 / 3) and logs["labelled"] == 3.0
    for batch in (ImageBatch(images, None), ImageBatch(images, torch.tensor([0, 1, 0, 2]))):
        loss, logs = family.discriminator_loss(batch, nets)
        assert "d_sup" not in logs and "d_accuracy" not in logs
        assert loss.item() == pytest.approx(math.log(1.25) + math.log(5.0), rel=1e-6)
    g_loss, _ = family.generator_loss(ImageBatch(images, None), nets)
    assert g_loss.item() == pytest.approx(math.log(1.25), rel=1e-6)


def test_sgan_refuses_unlabelled_data():
    with pytest.raises(ConfigError, match="sgan .* labelled data"):
        build_family("sgan", DataSpec(channels=1, image_size=8, num_classes=0))


def test_sgan_discriminator_has_k_plus_one_outputs():
    family = build_family("sgan", SPEC, {"d_width": 8})
    family.nets.eval()
    assert family.nets["D"](stored_images(2)).shape == (2, SPEC.num_classes + 1)


# --- bigan -------------------------------------------------------------------------------------


class PairDiscriminator(nn.Module):
    """Logit = ln 3 * (2 * mean pixel - 1), whatever z; remembers the latents it was paired with."""

    def __init__(self):
        super().__init__()
        self.latents = []

    def forward(self, x, z):
        self.latents.append(z)
        return LN3 * (2 * x.flatten(1).mean(1) - 1)


class ZeroEncoder(nn.Module):
    def forward(self, x):
        return torch.zeros(x.size(0), 50)


class HalfGenerator(nn.Module):
    def forward(self, z):
        return torch.full((z.size(0), 1, 8, 8), 0.5)


def test_bigan_encoder_maps_images_to_latents_of_z_dim():
    family = build_family("bigan", SPEC, {"e_width": 8})
    family.nets.eval()
    assert family.config.z_dim == 50
    assert family.nets["E"](stored_images(3)).shape == (3, 50)


def test_bigan_losses_pair_images_with_latents_and_log_reconstruction():
    family = build_family("bigan", SPEC)
    discriminator = PairDiscriminator()
    nets = {"G": HalfGenerator(), "E": ZeroEncoder(), "D": discriminator}
    batch = ImageBatch(torch.ones(4, 1, 8, 8), None)
    d_loss, logs = family.discriminator_loss(batch, nets)
    # D(x, E(x)) = sigmoid(ln 3) = .75, D(G(z), z) = sigmoid(0) = .5: -log .75 - log(1 - .5)
    assert d_loss.item() == pytest.approx(math.log(4 / 3) + LN2, rel=1e-6)
    assert torch.equal(discriminator.latents[0], torch.zeros(4, 50))  # real images go with their encodings
    eg_loss, logs = family.encoder_generator_loss(batch, nets)
    # inverted labels: -log(1 - .75) - log .5
    assert eg_loss.item() == pytest.approx(math.log(4.0) + LN2, rel=1e-6)
    assert logs["recon_mse"] == pytest.approx(0.25)  # G(E(x)) = 0.5 everywhere against x = 1


def test_bigan_prior_is_uniform_on_the_unit_cube():
    family = build_family("bigan", SPEC, {"g_width": 8, "e_width": 8, "d_width": 8})
    z = family.prior(4000)
    assert z.min() >= -1 and z.max() <= 1 and z.mean().abs() < 0.02 and z.shape == (4000, 50)


def test_bigan_trains_encoder_and_generator_in_one_phase():
    phases = build_family("bigan", SPEC).phases()
    assert [(p.name, p.modules) for p in phases] == [("D", ("D",)), ("EG", ("E", "G"))]
