"""WGAN, LSGAN and EBGAN: their losses against hand values, and what each family must keep true."""

import math

import pytest
import torch
from torch import nn

from components import losses
from components.families import DataSpec, ImageBatch, build_family
from components.nets.autoencoder import AutoEncoderDiscriminator, reconstruction_energy
from components.training.loop import run_phase

SPEC = DataSpec(channels=1, image_size=8)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


class ConstantGenerator(nn.Module):
    """Ignores z: every pixel is ``value``."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, z):
        return torch.full((z.size(0), 1, 8, 8), self.value)


class MeanScore(nn.Module):
    """Score = scale x mean pixel."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * x.flatten(1).mean(1)


class MeanEnergy(nn.Module):
    """An auto-encoder stand-in: energy = mean pixel, code = the flattened image."""

    def forward(self, x):
        return x.flatten(1).mean(1), x.flatten(1)


def real_batch(value, n=4):
    return ImageBatch(torch.full((n, 1, 8, 8), value))


# --- pure losses ---------------------------------------------------------------------------------


def test_clip_weights_clamps_every_parameter_into_the_box():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.003]]))
        layer.bias.fill_(-2.0)
    losses.clip_weights_(layer, 0.01)
    # 0.5 -> 0.01, -0.003 stays, -2 -> -0.01
    assert layer.weight.flatten().tolist() == pytest.approx([0.01, -0.003])
    assert layer.bias.item() == pytest.approx(-0.01)


def test_least_squares_discriminator_loss_hand_value():
    # real (1, 3) towards b = 1: (0 + 4) / 2 = 2, halved -> 1; fake (0, 2) towards a = 0: (0 + 4) / 2, halved -> 1
    assert losses.least_squares_discriminator_loss(t(1.0, 3.0), t(0.0, 2.0)).item() == pytest.approx(2.0)


def test_least_squares_discriminator_loss_other_coding():
    # a = -1, b = 1: real (1, 3) -> (0 + 4) / 2 / 2 = 1; fake (0, 2) towards -1: (1 + 9) / 2 / 2 = 2.5
    value = losses.least_squares_discriminator_loss(t(1.0, 3.0), t(0.0, 2.0), real_target=1.0, fake_target=-1.0)
    assert value.item() == pytest.approx(3.5)


def test_least_squares_generator_loss_hand_value():
    # fake (0, 2) towards c = 1: (1 + 1) / 2 = 1, halved -> 0.5
    assert losses.least_squares_generator_loss(t(0.0, 2.0)).item() == pytest.approx(0.5)


def test_energy_margin_discriminator_loss_hand_value():
    # E[D(x)] = (0.5 + 1.5) / 2 = 1; hinge with m = 10 on fakes (4, 12): (6 + 0) / 2 = 3
    value = losses.energy_margin_discriminator_loss(t(0.5, 1.5), t(4.0, 12.0), margin=10.0)
    assert value.item() == pytest.approx(4.0)


def test_pulling_away_term_hand_value():
    # codes (1,0), (0,2), (1,1): cos^2 = 0, 1/2, 1/2 for the pairs (1,2), (1,3), (2,3);
    # both orders count: 2 * (0 + 0.5 + 0.5) = 2, over N(N-1) = 6 -> 1/3
    codes = t(1.0, 0.0, 0.0, 2.0, 1.0, 1.0).view(3, 2)
    assert losses.pulling_away_term(codes).item() == pytest.approx(1.0 / 3.0)


def test_pulling_away_term_of_identical_codes_is_one_and_of_one_code_is_zero():
    assert losses.pulling_away_term(t(2.0, 1.0, 2.0, 1.0).view(2, 2)).item() == pytest.approx(1.0)
    single = t(3.0, 4.0).view(1, 2).requires_grad_(True)
    value = losses.pulling_away_term(single)
    value.backward()  # still differentiable: a batch of one must not break the generator step
    assert value.item() == 0.0


def test_reconstruction_energy_is_the_per_sample_mse():
    images = torch.zeros(2, 1, 2, 2)
    reconstructions = torch.tensor([[1.0, 2.0, 0.0, -1.0], [1.0, 1.0, 1.0, 1.0]]).view(2, 1, 2, 2)
    # (1 + 4 + 0 + 1) / 4 = 1.5 and (1 + 1 + 1 + 1) / 4 = 1
    assert reconstruction_energy(images, reconstructions).tolist() == pytest.approx([1.5, 1.0])


# --- wgan ----------------------------------------------------------------------------------------


def test_wgan_runs_n_critic_clipped_critic_updates_per_generator_update():
    family = build_family("wgan", SPEC)
    phases = family.phases()
    assert [(p.name, p.repeats) for p in phases] == [("critic", 5), ("G", 1)]
    assert phases[0].after_step is not None and phases[1].after_step is None
    assert all(isinstance(o, torch.optim.RMSprop) for o in family.build_optimizers().values())


def test_wgan_critic_loss_reports_the_wasserstein_estimate():
    family = build_family("wgan", SPEC)
    nets = {"G": ConstantGenerator(0.0), "D": MeanScore(scale=3.0)}
    loss, logs = family.critic_loss(real_batch(1.0), nets)
    # C(real) = 3, C(fake) = 0: loss 0 - 3, Wasserstein estimate 3
    assert loss.item() == pytest.approx(-3.0) and logs["wasserstein"] == pytest.approx(3.0)
    g_loss, _ = family.generator_loss(real_batch(1.0), {"G": ConstantGenerator(0.5), "D": MeanScore(3.0)})
    assert g_loss.item() == pytest.approx(-1.5)


def test_wgan_critic_weights_stay_within_the_clip_after_critic_steps():
    torch.manual_seed(0)
    # lr 1: an unclipped RMSProp step would move weights far outside [-c, c]
    family = build_family("wgan", SPEC, {"g_width": 4, "d_width": 4, "z_dim": 8, "lr": 1.0})
    c = family.config.clip

    def critic_params():
        return torch.cat([p.detach().flatten() for p in family.nets["D"].parameters()])

    assert critic_params().abs().max() <= c  # clipped from the start, not only after the first step
    optimizers, nets = family.build_optimizers(), dict(family.nets.items())
    critic_phase = family.phases()[0]
    batch = ImageBatch(torch.rand(6, 1, 8, 8) * 2 - 1)
    for _ in range(3):
        run_phase(critic_phase, batch, nets, optimizers)
        params = critic_params()
        assert params.abs().max() <= c + 1e-12
        assert (params.abs() == c).any()  # the clip did act: some weights sit on the boundary


# --- lsgan ---------------------------------------------------------------------------------------


def test_lsgan_losses_on_stub_networks():
    family = build_family("lsgan", SPEC)
    nets = {"G": ConstantGenerator(0.5), "D": MeanScore()}
    d_loss, logs = family.discriminator_loss(real_batch(1.0), nets)
    # D(x) = 1 (target 1: 0), D(G(z)) = 0.5 (target 0): 0.5 * 0.25 = 0.125
    assert d_loss.item() == pytest.approx(0.125)
    assert logs["d_real"] == pytest.approx(1.0) and logs["d_fake"] == pytest.approx(0.5)
    g_loss, _ = family.generator_loss(real_batch(1.0), nets)
    assert g_loss.item() == pytest.approx(0.5 * 0.25)  # (0.5 - 1)^2 / 2


# --- ebgan ---------------------------------------------------------------------------------------


def test_ebgan_losses_on_stub_networks():
    family = build_family("ebgan", SPEC)
    assert (family.config.margin, family.config.pt_weight) == (10.0, 0.1)
    nets = {"G": ConstantGenerator(3.0), "D": MeanEnergy()}
    d_loss, logs = family.discriminator_loss(real_batch(1.0), nets)
    # energy 1 on real, 3 on fake: 1 + [10 - 3]^+ = 8
    assert d_loss.item() == pytest.approx(8.0)
    assert logs["energy_real"] == pytest.approx(1.0) and logs["energy_fake"] == pytest.approx(3.0)
    g_loss, logs = family.generator_loss(real_batch(1.0), nets)
    # energy 3, and identical codes have cosine 1: PT = 1, so 3 + 0.1 * 1
    assert g_loss.item() == pytest.approx(3.1) and logs["pt"] == pytest.approx(1.0)


@pytest.mark.parametrize("image_size", [8, 28, 32])
def test_ebgan_discriminator_energy_is_the_reconstruction_mse(image_size):
    torch.manual_seed(0)
    discriminator = AutoEncoderDiscriminator(channels=1, image_size=image_size, width=4).eval()
    images = torch.rand(3, 1, image_size, image_size) * 2 - 1
    energy, codes = discriminator(images)
    reconstructions = discriminator.decoder(discriminator.encoder(images))
    assert reconstructions.shape == images.shape
    expected = ((reconstructions - images) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(energy, expected)
    assert codes.shape[0] == 3 and codes.dim() == 2
    assert math.isfinite(losses.pulling_away_term(codes).item())
