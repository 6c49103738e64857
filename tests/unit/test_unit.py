"""UNIT: its KL, reconstruction, cycle and GAN terms against hand values, the shared layers, shapes and the export."""

import math

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families.unit import (UNITTranslator, unit_discriminator_loss, unit_generator_adversarial_loss,
                                      unit_variance_kl, vae_terms)

LN2, LN3 = math.log(2), math.log(3)
SPEC = DataSpec(channels=3, image_size=16, num_classes=3, num_domains=2)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("unit", spec, {**get_family("unit").tiny, **overrides})


def square(*values):
    """Four values as a 1 x 1 x 2 x 2 image, row by row."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# -- pure losses ----------------------------------------------------------------------------------


def test_kl_is_half_the_squared_norm_of_the_mean():
    # sample 1: mu = (1, -2), ||mu||^2 = 5; sample 2: mu = (0, 3), ||mu||^2 = 9
    mu = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    # per sample: 5 / 2 and 9 / 2, batch mean 3.5 (the KL in nats)
    assert unit_variance_kl(mu, per_dimension=False).item() == pytest.approx(3.5)
    # per dimension (the default, the official code's normalisation): 3.5 / 2 dimensions = 0.5 * mean(mu^2)
    assert unit_variance_kl(mu).item() == pytest.approx(1.75)
    assert unit_variance_kl(mu).item() == pytest.approx(0.5 * (1 + 4 + 0 + 9) / 4)
    assert unit_variance_kl(torch.zeros(3, 4, 2, 2)).item() == 0.0


def test_kl_of_image_shaped_codes_sums_every_code_element():
    # one sample, a 2 x 1 x 2 code of (1, 1, 2, 0): ||mu||^2 = 6, KL 3, over 4 dimensions 0.75
    mu = torch.tensor([1.0, 1.0, 2.0, 0.0]).view(1, 2, 1, 2)
    assert unit_variance_kl(mu, per_dimension=False).item() == pytest.approx(3.0)
    assert unit_variance_kl(mu).item() == pytest.approx(0.75)


def test_vae_terms_weigh_the_kl_and_the_l1():
    mu = torch.tensor([[1.0, -2.0], [0.0, 3.0]])  # KL 1.75 (above)
    outputs, targets = square(0.5, -0.5, 1.0, 0.0), square(0.0, -0.25, 1.0, 0.25)  # |diff| 0.5, 0.25, 0, 0.25
    total, kl, l1 = vae_terms(mu, outputs, targets, kl_weight=0.1, l1_weight=100.0)
    assert kl.item() == pytest.approx(1.75) and l1.item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(0.175 + 25.0)


def test_least_squares_discriminator_and_generator_losses():
    # real (1, 0.5): (0^2 + 0.5^2) / 2 = 0.125; fake (0, 0.5): (0 + 0.25) / 2 = 0.125; sum 0.25
    assert unit_discriminator_loss(t(1.0, 0.5), t(0.0, 0.5)).item() == pytest.approx(0.25)
    # fake (0, 0.5) wanted at 1: (1 + 0.25) / 2 = 0.625
    assert unit_generator_adversarial_loss(t(0.0, 0.5)).item() == pytest.approx(0.625)


def test_bce_discriminator_and_generator_losses():
    # real (0, ln 3) -> D = (1/2, 3/4): -log D = (ln 2, ln 4/3); fake -ln 3 -> D = 1/4: -log(3/4) = ln 4/3
    expected = (LN2 + math.log(4 / 3)) / 2 + math.log(4 / 3)
    assert unit_discriminator_loss(t(0.0, LN3), t(-LN3), "bce").item() == pytest.approx(expected)
    # G: -log D(fake) at logit ln 3: -log(3/4) = ln 4/3
    assert unit_generator_adversarial_loss(t(LN3), "bce").item() == pytest.approx(math.log(4 / 3))
    with pytest.raises(ValueError, match="hinge"):
        unit_discriminator_loss(t(0.0), t(0.0), "hinge")


# -- the phases with stub networks ---------------------------------------------------------------


class Scale(nn.Module):
    """x -> factor * x + shift, with a parameter at zero so the losses have a graph."""

    def __init__(self, factor, shift=0.0):
        super().__init__()
        self.factor, self.shift = factor, shift
        self.zero = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.factor * x + self.shift + self.zero


def stub_translator():
    """E_1 = id, E_2 = -x, shared layers id; G_1(z) = z / 2, G_2(z) = z + 0.5; no latent noise."""
    translator = UNITTranslator([Scale(1.0), Scale(-1.0)], Scale(1.0), Scale(1.0), [Scale(0.5), Scale(1.0, 0.5)])
    translator.sample = lambda mu: mu
    return translator


class ZeroDiscriminators(nn.Module):
    """Both discriminators score every image 0; remembers what they judged."""

    def __init__(self):
        super().__init__()
        self.zero = nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, a, b):
        self.seen.append((a.detach().clone(), b.detach().clone()))
        return self.zero * a[:, :1], self.zero * b[:, :1]


A = square(0.5, -0.5, 1.0, 0.0)
B = square(0.25, 0.75, -0.25, 0.0)


def stub_batch():
    return ImageBatch(torch.cat([B, A]), domains=torch.tensor([1, 0]))  # B first: the split uses the domains


def test_generator_phase_hand_values_with_stub_networks():
    family = tiny(DataSpec(channels=1, image_size=8, num_domains=2), width=1)
    nets = {"G": stub_translator(), "D": ZeroDiscriminators()}
    loss, logs = family.generator_loss(stub_batch(), nets)
    # mu_a = a = (0.5, -0.5, 1, 0): 0.5 * mean(mu^2) = 0.5 * 1.5 / 4 = 0.1875
    # mu_b = -b = (-0.25, -0.75, 0.25, 0): 0.5 * (0.0625 + 0.5625 + 0.0625) / 4 = 0.0859375
    assert logs["g_kl"] == pytest.approx(0.1875 + 0.0859375)
    # recon_a = G_1(a) = a / 2: |a / 2 - a| = |a| / 2 = (0.25, 0.25, 0.5, 0), mean 0.25
    # recon_b = G_2(-b) = 0.5 - b = (0.25, -0.25, 0.75, 0.5) vs b: |0.5 - 2b| = (0, 1, 1, 0.5), mean 0.625
    assert logs["g_recon"] == pytest.approx(0.25 + 0.625)
    # a -> b = G_2(a) = a + 0.5 = (1, 0, 1.5, 0.5); re-encoded by E_2: mu_ab = (-1, 0, -1.5, -0.5),
    #   KL 0.5 * (1 + 2.25 + 0.25) / 4 = 0.4375; cycle G_1(mu_ab) = (-0.5, 0, -0.75, -0.25) vs a:
    #   |diff| = (1, 0.5, 1.75, 0.25), mean 0.875
    # b -> a = G_1(-b) = -b / 2 = (-0.125, -0.375, 0.125, 0); re-encoded by E_1: the same, KL
    #   0.5 * (0.015625 + 0.140625 + 0.015625) / 4 = 0.021484375; cycle G_2 = (0.375, 0.125, 0.625, 0.5) vs b:
    #   |diff| = (0.125, 0.625, 0.875, 0.5), mean 0.53125
    assert logs["g_cycle_kl"] == pytest.approx(0.4375 + 0.021484375)
    assert logs["g_cycle"] == pytest.approx(0.875 + 0.53125)
    # D scores 0 everywhere: least squares (0 - 1)^2 = 1 per domain
    assert logs["g_adv"] == pytest.approx(2.0)
    expected = (10 * 2.0 + 0.1 * (0.1875 + 0.0859375) + 100 * (0.25 + 0.625)
                + 0.1 * (0.4375 + 0.021484375) + 100 * (0.875 + 0.53125))
    assert loss.item() == pytest.approx(expected)
    # D_1 judged the B -> A translation, D_2 the A -> B one
    (judged_a, judged_b), = nets["D"].seen
    torch.testing.assert_close(judged_a, -B / 2)
    torch.testing.assert_close(judged_b, A + 0.5)


def test_discriminator_phase_judges_reals_and_translations_of_each_domain():
    family = tiny(DataSpec(channels=1, image_size=8, num_domains=2), width=1)
    nets = {"G": stub_translator(), "D": ZeroDiscriminators()}
    loss, logs = family.discriminator_loss(stub_batch(), nets)
    (judged_a, judged_b), = nets["D"].seen
    torch.testing.assert_close(judged_a, torch.cat([A, -B / 2]))  # real A, then B -> A
    torch.testing.assert_close(judged_b, torch.cat([B, A + 0.5]))  # real B, then A -> B
    # scores 0: real (0 - 1)^2 = 1, fake 0^2 = 0, per domain 1
    assert loss.item() == pytest.approx(2.0) and logs["d_real"] == logs["d_fake"] == 0.0


def test_a_batch_needs_both_domains():
    family = tiny()
    only_a = ImageBatch(torch.zeros(2, 3, 16, 16), domains=torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="both domains"):
        family.generator_loss(only_a, family.nets)


# -- the shared layers and the shared latent space -----------------------------------------------


def test_high_level_encoder_and_low_level_generator_layers_are_one_module():
    family = tiny()
    g = family.nets["G"]
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        before = g.encode(x, 0), g.encode(x, 1)
        first_conv = next(m for m in g.shared_encoder.modules() if isinstance(m, nn.Conv2d))
        first_conv.weight.add_(0.5)  # one edit of the shared layers ...
        after = g.encode(x, 0), g.encode(x, 1)
    for old, new in zip(before, after):  # ... changes both domains' codes
        assert not torch.allclose(old, new)


def test_shared_parameters_are_counted_once_in_the_optimizer():
    family = tiny()
    g = family.nets["G"]
    optimizer = family.build_optimizers()["G"]
    optimised = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(optimised) == len({id(p) for p in optimised}) == len(list(g.parameters()))

    def count(module):
        return sum(p.numel() for p in module.parameters())

    private = sum(count(m) for m in (*g.encoders, *g.decoders))
    shared = count(g.shared_encoder) + count(g.shared_decoder)
    assert sum(p.numel() for p in optimised) == private + shared  # not private + 2 * shared
    assert count(g.encoders[0]) == count(g.encoders[1]) and count(g.decoders[0]) == count(g.decoders[1])
    assert not {id(p) for p in g.encoders[0].parameters()} & {id(p) for p in g.encoders[1].parameters()}


@pytest.mark.parametrize("size", [16, 32, 64])
def test_both_encoders_map_to_one_latent_shape_and_the_generators_back_to_images(size):
    family = tiny(DataSpec(channels=3, image_size=size, num_domains=2))
    g, d = family.nets["G"], family.nets["D"]
    x = torch.rand(3, 3, size, size) * 2 - 1
    code_a, code_b = g.encode(x, 0), g.encode(x, 1)
    assert code_a.shape == code_b.shape == (3, 4 * 4, size // 4, size // 4)  # tiny width 4, two downsamplings
    for domain in (0, 1):
        images = g.decode(code_a, domain)
        assert images.shape == (3, 3, size, size) and images.abs().max() <= 1
    out = g(x, x)
    for key in ("recon_a", "recon_b", "a_to_b", "b_to_a", "cycle_a", "cycle_b"):
        assert out[key].shape == x.shape
    scores_a, scores_b = d(x, x)
    # tiny D: one stride-2 4x4 layer (size / 2), then two stride-1 4x4 layers with padding 1 (one pixel less each)
    assert scores_a.shape == scores_b.shape == (3, 1, size // 2 - 2, size // 2 - 2)


def test_default_networks_at_32_pixels():
    family = build_family("unit", DataSpec(channels=3, image_size=32, num_domains=2))
    g = family.nets["G"]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert g.encode(x, 1).shape == (2, 32, 8, 8)
    assert g.decode(g.encode(x, 0), 1).shape == x.shape
    assert family.nets["D"](x, x)[0].shape == (2, 1, 6, 6)


def test_image_size_must_allow_the_downsamplings():
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_family("unit", DataSpec(channels=3, image_size=18, num_domains=2))
    with pytest.raises(ConfigError, match="gan_loss"):
        tiny(gan_loss="wasserstein")


# -- generate and the export ---------------------------------------------------------------------


def test_generate_translates_at_the_mean_code():
    family = tiny()
    family.nets.eval()
    g = family.nets["G"]
    torch.manual_seed(2)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    source = torch.tensor([0, 1, 0, 1])
    out = family.generate(4, DomainCondition(x, source, 1 - source))
    with torch.no_grad():
        a_to_b, b_to_a = g.decode(g.encode(x, 0), 1), g.decode(g.encode(x, 1), 0)
    torch.testing.assert_close(out[0::2], a_to_b[0::2], rtol=0, atol=0)  # source 0: G_2(E_1(x))
    torch.testing.assert_close(out[1::2], b_to_a[1::2], rtol=0, atol=0)  # source 1: G_1(E_2(x))
    torch.testing.assert_close(family.generate(4, DomainCondition(x, source, 1 - source)), out, rtol=0, atol=0)
    same = family.generate(4, DomainCondition(x, source, source))  # target = source: the reconstruction
    with torch.no_grad():
        torch.testing.assert_close(same[0], g.decode(g.encode(x, 0), 0)[0], rtol=0, atol=0)
    with pytest.raises(DataError, match="3 source images for 4"):
        family.generate(4, DomainCondition(x[:3], source[:3], 1 - source[:3]))
    with pytest.raises(DataError, match="DomainCondition"):
        family.generate(4, x)


def test_export_blends_the_two_translations_by_the_target_plane():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    assert exported.condition_shape == (4, 16, 16) and exported.condition_kind == "image"
    inputs = exported.example_inputs(4)
    target = inputs[:, 3]
    assert torch.equal(target, (1 - torch.arange(4) % 2).float().view(4, 1, 1).expand(4, 16, 16))
    source = 1 - target[:, 0, 0].long()
    with torch.no_grad():
        expected = family.generate(4, DomainCondition(inputs[:, :3], source, 1 - source))
        torch.testing.assert_close(exported(inputs), expected, atol=1e-6, rtol=0)


def test_export_is_a_traceable_graph_with_any_batch_size():
    family = tiny()
    family.nets.eval()
    exported = family.export_generator().eval()
    program = torch.export.export(exported, (exported.example_inputs(4),),
                                  dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs), exported(inputs), atol=1e-5, rtol=0)
