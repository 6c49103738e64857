"""Each family's phase losses on stub networks whose outputs are known, against hand values."""

import math

import pytest
import torch
from torch import nn

from components.families import DataSpec, ImageBatch, build_family

LN3 = math.log(3.0)  # logit of 0.75
SPEC = DataSpec(channels=1, image_size=8, num_classes=3)


class ConstantGenerator(nn.Module):
    """Ignores z (and labels): every pixel is ``value``; remembers the labels it was asked for."""

    def __init__(self, value):
        super().__init__()
        self.value, self.labels = value, None

    def forward(self, z, labels=None):
        self.labels = labels
        return torch.full((z.size(0), 1, 8, 8), self.value)


class MeanDiscriminator(nn.Module):
    """Logit = scale x mean pixel; remembers the labels it saw."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale, self.seen = scale, []

    def forward(self, x, labels=None):
        self.seen.append(labels)
        return self.scale * x.flatten(1).mean(1)


def real_batch(value, n=4, labels=None):
    return ImageBatch(torch.full((n, 1, 8, 8), value), labels)


@pytest.mark.parametrize("name", ["gan", "dcgan"])
def test_bce_families_discriminator_and_generator_losses(name):
    family = build_family(name, SPEC)
    nets = {"G": ConstantGenerator(-LN3), "D": MeanDiscriminator()}
    d_loss, logs = family.discriminator_loss(real_batch(LN3), nets)
    # D(x) = 0.75, D(G(z)) = 0.25: -log .75 - log .75
    assert d_loss.item() == pytest.approx(-2 * math.log(0.75), rel=1e-5)
    assert logs["d_real"] == pytest.approx(0.75) and logs["d_fake"] == pytest.approx(0.25)
    g_loss, _ = family.generator_loss(real_batch(LN3), nets)
    assert g_loss.item() == pytest.approx(-math.log(0.25), rel=1e-5)  # non-saturating: -log D(G(z))


def test_gan_minimax_generator_option():
    family = build_family("gan", SPEC, {"generator_loss": "minimax"})
    g_loss, _ = family.generator_loss(real_batch(0.0), {"G": ConstantGenerator(-LN3), "D": MeanDiscriminator()})
    assert g_loss.item() == pytest.approx(math.log(1 - 0.25), rel=1e-5)


def test_wgan_gp_critic_loss_with_penalty():
    family = build_family("wgan_gp", SPEC)
    # C(x) = 3 * sum(x) / 8 over 64 pixels: gradient norm 3 everywhere -> penalty (3 - 1)^2 = 4
    critic = MeanDiscriminator(scale=3 * 64 / 8)
    loss, logs = family.critic_loss(real_batch(1.0), {"G": ConstantGenerator(0.0), "D": critic})
    # C(real) = 24, C(fake) = 0: 0 - 24 + 10 * 4
    assert loss.item() == pytest.approx(16.0, rel=1e-5)
    assert logs["wasserstein"] == pytest.approx(24.0) and logs["gp"] == pytest.approx(4.0, rel=1e-5)
    g_loss, _ = family.generator_loss(real_batch(1.0), {"G": ConstantGenerator(0.5), "D": critic})
    assert g_loss.item() == pytest.approx(-12.0, rel=1e-5)


def test_wgan_gp_runs_n_critic_critic_updates_per_generator_update():
    phases = build_family("wgan_gp", SPEC, {"n_critic": 3}).phases()
    assert [(p.name, p.repeats) for p in phases] == [("critic", 3), ("G", 1)]


def test_cgan_conditions_both_networks_on_labels():
    family = build_family("cgan", SPEC)
    generator, discriminator = ConstantGenerator(-LN3), MeanDiscriminator()
    labels = torch.tensor([0, 2, 1, 2])
    d_loss, _ = family.discriminator_loss(real_batch(LN3, labels=labels), {"G": generator, "D": discriminator})
    assert d_loss.item() == pytest.approx(-2 * math.log(0.75), rel=1e-5)
    real_seen, fake_seen = discriminator.seen
    assert torch.equal(real_seen, labels)  # D judges real images with their own labels
    assert torch.equal(fake_seen, generator.labels)  # and fakes with the labels G was asked for
    g_loss, _ = family.generator_loss(real_batch(LN3, labels=labels), {"G": generator, "D": discriminator})
    assert g_loss.item() == pytest.approx(-math.log(0.25), rel=1e-5)
    assert torch.equal(discriminator.seen[-1], generator.labels)


def test_cgan_networks_use_the_label():
    family = build_family("cgan", SPEC)
    z = torch.randn(1, family.config.z_dim).repeat(3, 1)
    family.nets.eval()
    images = family.nets["G"](z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(images[0], images[1])
