"""SPADE / GauGAN: hinge and feature-matching losses by hand, SPADE as conditional batch norm, the KL term,
the family's wiring with stub networks, network shapes at 32 x 32, the encoder mode and the export."""

import copy
import math

import pytest
import torch
from torch import nn

from components import losses
from components.errors import ConfigError, DataError
from components.families import DataSpec, ExemplarCondition, ImageBatch, build_family, get_family, one_hot_maps
from components.families.spade import ImageEncoder, kl_to_standard_normal, patch_grid_sizes, reparameterise
from components.nets.patchgan import MultiScaleDiscriminator
from components.nets.spade import SPADE, SPADEGenerator, frozen_spectral_norm
from components.training.loop import run_phase

SPEC = DataSpec(channels=3, image_size=16, num_classes=3, map_classes=4)
SPEC32 = DataSpec(channels=3, image_size=32, num_classes=3, map_classes=5)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    return build_family("spade", spec, {**get_family("spade").tiny, **overrides})


def batch_for(spec, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, spec.channels, spec.image_size, spec.image_size, generator=g) * 2 - 1
    maps = torch.randint(spec.map_classes, (n, spec.image_size, spec.image_size), generator=g)
    return ImageBatch(images, None, None, maps)


# -- hinge and feature matching, by hand ----------------------------------------------------------

def test_hinge_losses_on_tiny_logits():
    real, fake = t(0.5, 2.0, -1.0), t(-2.0, 0.0, 0.5)
    # D: mean(relu(1 - real)) = mean(0.5, 0, 2) = 5/6; mean(relu(1 + fake)) = mean(0, 1, 1.5) = 5/6
    assert losses.hinge_discriminator_loss(real, fake).item() == pytest.approx(5 / 3)
    # G: -mean(fake) = -(-1.5 / 3) = 0.5
    assert losses.hinge_generator_loss(fake).item() == pytest.approx(0.5)


def test_hinge_losses_average_over_discriminator_scales():
    real = [t(0.5, 2.0, -1.0), t(1.5, 0.0)]
    fake = [t(-2.0, 0.0, 0.5), t(-0.5, 1.0)]
    # scale 1: 5/3 (above); scale 2: mean(relu(-0.5), relu(1)) + mean(relu(0.5), relu(2)) = 0.5 + 1.25 = 1.75
    d = losses.multiscale_mean(real, losses.hinge_discriminator_loss, fake)
    assert d.item() == pytest.approx((5 / 3 + 1.75) / 2)
    # G: scale 1: 0.5; scale 2: -mean(-0.5, 1.0) = -0.25
    assert losses.multiscale_mean(fake, losses.hinge_generator_loss).item() == pytest.approx((0.5 - 0.25) / 2)


def test_feature_matching_loss_on_two_scales_of_two_layers_and_logits():
    real = [[t(1.0, 2.0), t(0.0, 0.0, 0.0, 0.0), t(5.0)],
            [t(1.0), t(2.0, 2.0), t(3.0)]]
    fake = [[t(2.0, 0.0), t(1.0, -1.0, 2.0, 0.0), t(-5.0)],
            [t(1.0), t(-1.0, 2.0), t(-3.0)]]
    real = [[r.requires_grad_() for r in scale] for scale in real]
    fake = [[f.requires_grad_() for f in scale] for scale in fake]
    # scale 1: mean(|1|, |2|) = 1.5 + mean(1, 1, 2, 0) = 1.0 -> 2.5; the logits (|10|) are not matched
    # scale 2: mean(|0|) = 0 + mean(|3|, |0|) = 1.5 -> 1.5; averaged over scales: 2.0
    loss = losses.feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert all(r.grad is None for scale in real for r in scale)  # the real side is a constant target
    # d/dfake of mean|fake - real| is sign(fake - real) / size, halved by the mean over scales
    torch.testing.assert_close(fake[0][1].grad, t(1.0, -1.0, 1.0, 0.0) / 4 / 2)


# -- SPADE is conditional batch norm on a constant map ----------------------------------------------

def class_constants(spade: SPADE, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gamma_c, beta_c read from the module's weights, for a map that is class ``cls`` everywhere.

    Away from the border a 3x3 conv of a constant one-hot map sums its kernel over space at the class's
    input channel: hidden = relu(W_s[:, c].sum(3x3) + b_s); then gamma = W_g.sum(3x3) @ hidden + b_g.
    """
    shared = spade.shared[0]
    hidden = torch.relu(shared.weight[:, cls].sum(dim=(1, 2)) + shared.bias)
    gamma = spade.gamma.weight.sum(dim=(2, 3)) @ hidden + spade.gamma.bias
    beta = spade.beta.weight.sum(dim=(2, 3)) @ hidden + spade.beta.bias
    return gamma, beta


def constant_map(cls: int, n=2, classes=4, size=8):
    return one_hot_maps(torch.full((n, size, size), cls), classes)


def test_spade_on_a_constant_label_map_is_batch_norm_with_the_class_scale_and_shift():
    torch.manual_seed(0)
    spade = SPADE(channels=3, map_channels=4, hidden=5)
    x = torch.randn(2, 3, 8, 8) * 3 + 1
    gamma, beta = class_constants(spade, 2)
    with torch.no_grad():
        out = spade(x, constant_map(2))
        expected = nn.BatchNorm2d(3, affine=False)(x) * (1 + gamma.view(1, 3, 1, 1)) + beta.view(1, 3, 1, 1)
    # two stacked 3x3 convs with zero padding: pixels within 2 of the border see the padding
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    torch.testing.assert_close(out[inner], expected[inner])
    assert not torch.allclose(out, expected)  # the border is where zero padding shows


def test_two_constant_maps_give_different_per_channel_scales():
    torch.manual_seed(0)
    spade = SPADE(channels=3, map_channels=4, hidden=5)
    with torch.no_grad():
        (gamma_0, beta_0), (gamma_1, beta_1) = class_constants(spade, 0), class_constants(spade, 1)
        measured_0, _ = spade.modulation(constant_map(0), (8, 8))
        measured_1, _ = spade.modulation(constant_map(1), (8, 8))
    torch.testing.assert_close(measured_0[0, :, 4, 4], gamma_0)
    torch.testing.assert_close(measured_1[0, :, 4, 4], gamma_1)
    assert (gamma_0 - gamma_1).abs().min() > 1e-3 and (beta_0 - beta_1).abs().min() > 1e-3
    # the same normalised activations, scaled per channel by each class's own 1 + gamma
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        normed = nn.BatchNorm2d(3, affine=False)(x)[:, :, 2:-2, 2:-2]
        out_0, out_1 = spade(x, constant_map(0))[:, :, 2:-2, 2:-2], spade(x, constant_map(1))[:, :, 2:-2, 2:-2]
    for out, gamma, beta in ((out_0, gamma_0, beta_0), (out_1, gamma_1, beta_1)):
        scale = ((out - beta.view(1, 3, 1, 1)) / normed).flatten(2)
        torch.testing.assert_close(scale, (1 + gamma).view(1, 3, 1).expand_as(scale))


def test_spade_layout_reaches_the_output_per_pixel():
    """A map with two classes side by side modulates each half with its class's constants."""
    torch.manual_seed(0)
    spade = SPADE(channels=3, map_channels=4, hidden=5)
    labels = torch.zeros(1, 8, 16, dtype=torch.long)
    labels[:, :, 8:] = 3
    with torch.no_grad():
        gamma, _ = spade.modulation(one_hot_maps(labels, 4), (8, 16))
    torch.testing.assert_close(gamma[0, :, 4, 2], class_constants(spade, 0)[0].detach())
    torch.testing.assert_close(gamma[0, :, 4, 13], class_constants(spade, 3)[0].detach())


# -- the encoder's KL term -------------------------------------------------------------------------

def test_kl_to_standard_normal_by_hand():
    mu = t(0.0, 1.0, 2.0, 0.0).view(2, 2)
    logvar = t(0.0, 0.0, math.log(2), 0.0).view(2, 2)
    # -1/2 (1 + logvar - mu^2 - e^logvar) per element:
    # row 1: 0 and -1/2 (1 - 1 - 1) = 0.5 -> 0.5; row 2: -1/2 (1 + ln 2 - 4 - 2) = 2.5 - ln2 / 2, and 0
    # mean over the batch: (0.5 + 2.5 - ln2 / 2) / 2 = 1.5 - ln2 / 4
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(1.5 - math.log(2) / 4)
    assert kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_reparameterise_is_mu_plus_sigma_times_unit_noise():
    mu, logvar = t(1.0, -2.0).view(1, 2), t(0.0, 2 * math.log(3)).view(1, 2)
    torch.manual_seed(5)
    eps = torch.randn_like(mu)
    torch.manual_seed(5)
    torch.testing.assert_close(reparameterise(mu, logvar), mu + eps * t(1.0, 3.0).view(1, 2))


# -- the family's losses with stub networks -----------------------------------------------------------

class ConstantGenerator(nn.Module):
    """Every pixel is ``value``; takes (planes) or (planes, z)."""

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, planes, z=None):
        return self.value.expand(planes.size(0), 3, planes.size(2), planes.size(3))


class MeanPatchDiscriminator(nn.Module):
    """Scale k (1, 2) sees m = the image's mean pixel: features [s m, 3 s m], logits s m, with s = k."""

    def forward(self, pairs):
        m = pairs[:, -3:].mean(dim=(1, 2, 3))
        return [[s * m, 3 * s * m, s * m] for s in (1.0, 2.0)]


class FixedEncoder(nn.Module):
    def __init__(self, mu, logvar):
        super().__init__()
        self.mu, self.logvar = mu, logvar
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        return self.mu + self.anchor, self.logvar + self.anchor


def stub_batch(real_value, n=2):
    return ImageBatch(torch.full((n, 3, 16, 16), real_value), None, None, torch.zeros(n, 16, 16, dtype=torch.long))


def test_discriminator_loss_is_the_hinge_over_both_scales_on_label_image_pairs():
    family = tiny()
    nets = {"G": ConstantGenerator(-0.25), "D": MeanPatchDiscriminator()}
    loss, logs = family.discriminator_loss(stub_batch(0.5), nets)
    # real m = 0.5, fake m = -0.25
    # scale 1: relu(1 - 0.5) + relu(1 - 0.25) = 0.5 + 0.75; scale 2: relu(1 - 1) + relu(1 - 0.5) = 0.5
    assert loss.item() == pytest.approx((1.25 + 0.5) / 2)
    assert logs["d_real_logit"] == pytest.approx((0.5 + 1.0) / 2)
    assert logs["d_fake_logit"] == pytest.approx((-0.25 - 0.5) / 2)


def test_generator_loss_is_hinge_plus_ten_times_feature_matching():
    family = tiny()
    nets = {"G": ConstantGenerator(-0.25), "D": MeanPatchDiscriminator()}
    loss, logs = family.generator_loss(stub_batch(0.5), nets)
    # adversarial: -mean(-0.25, -0.5) = 0.375
    # feature matching: scale 1: |f - r| + |3f - 3r| = 0.75 + 2.25 = 3; scale 2: 1.5 + 4.5 = 6 -> mean 4.5
    assert logs["g_adv"] == pytest.approx(0.375)
    assert logs["g_fm"] == pytest.approx(4.5)
    assert loss.item() == pytest.approx(0.375 + 10 * 4.5)
    assert "g_kl" not in logs


def test_generator_loss_with_the_encoder_adds_five_hundredths_of_the_kl():
    family = tiny(use_encoder=True)
    mu, logvar = torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]), torch.zeros(2, 4)
    nets = {"G": ConstantGenerator(-0.25), "D": MeanPatchDiscriminator(), "E": FixedEncoder(mu, logvar)}
    loss, logs = family.generator_loss(stub_batch(0.5), nets)
    # KL: rows -1/2 (-1) = 0.5 and -1/2 (-4) = 2 -> mean 1.25
    assert logs["g_kl"] == pytest.approx(1.25)
    assert loss.item() == pytest.approx(0.375 + 10 * 4.5 + 0.05 * 1.25)


# -- networks at 32 x 32 ----------------------------------------------------------------------------

def test_generator_makes_32px_images_from_the_map_or_from_z():
    torch.manual_seed(0)
    planes = one_hot_maps(torch.randint(5, (3, 32, 32)), 5)
    g = SPADEGenerator(5, 3, 32, width=4, hidden=8)
    assert g(planes).shape == (3, 3, 32, 32)
    g_z = SPADEGenerator(5, 3, 32, width=4, z_dim=6, hidden=8)
    out = g_z(planes, torch.randn(3, 6))
    assert out.shape == (3, 3, 32, 32) and out.abs().max() <= 1


def test_discriminator_at_32px_returns_every_layer_for_both_scales():
    d = MultiScaleDiscriminator(5 + 3, scales=2, width=8, layers=2, norm="instance", spectral=True)
    outputs = d(torch.randn(3, 8, 32, 32))
    assert len(outputs) == 2 and all(len(scale) == 4 for scale in outputs)
    # 32 -> 16 -> 8 (stride 2) -> 7 (stride 1) -> 6 logits; the second scale sees 16 px: 8, 4, 3, 2
    assert [f.shape[1:] for f in outputs[0]] == [(8, 16, 16), (16, 8, 8), (32, 7, 7), (1, 6, 6)]
    assert outputs[1][-1].shape == (3, 1, 2, 2)
    assert patch_grid_sizes(32, 2, 2) == [(7, 6), (3, 2)]


def test_encoder_at_32px_gives_mu_and_logvar_of_z():
    mu, logvar = ImageEncoder(3, 32, z_dim=7, width=4)(torch.randn(3, 3, 32, 32))
    assert mu.shape == logvar.shape == (3, 7)


def test_family_networks_at_32px_and_default_config():
    family = build_family("spade", SPEC32)
    batch = batch_for(SPEC32, n=4)
    family.nets.eval()
    images = family.generate(4, batch.label_maps)
    assert images.shape == (4, 3, 32, 32)
    assert family.nets["D"].scales[0].blocks[0][0].in_channels == 5 + 3  # D sees concat(one-hot map, image)


def test_a_patchgan_too_deep_for_the_image_is_refused():
    with pytest.raises(ConfigError, match="d_layers"):
        build_family("spade", SPEC, {"d_layers": 2})  # 16 px: the second scale's 8 px run out


def test_ttur_optimizers():
    family = tiny(use_encoder=True)
    optimizers = family.build_optimizers()
    assert {k: o.param_groups[0]["lr"] for k, o in optimizers.items()} == {"G": 1e-4, "E": 1e-4, "D": 4e-4}
    assert all(o.param_groups[0]["betas"] == (0.0, 0.999) for o in optimizers.values())


# -- spectral norm is left alone by phases that only read a network -----------------------------------

def test_frozen_spectral_norm_keeps_power_iteration_buffers_and_batch_statistics_running():
    torch.manual_seed(0)
    g = SPADEGenerator(4, 3, 16, width=4, hidden=4)
    planes = one_hot_maps(torch.randint(4, (2, 16, 16)), 4)
    u_before = g.blocks[0].conv_0.weight_u.clone()
    stats_before = g.blocks[0].norm_0.norm.running_mean.clone()
    with torch.no_grad(), frozen_spectral_norm(g):
        g(planes)
    assert torch.equal(g.blocks[0].conv_0.weight_u, u_before)
    assert not torch.equal(g.blocks[0].norm_0.norm.running_mean, stats_before)  # batch norm still trains
    assert g.blocks[0].conv_0.training
    with torch.no_grad():
        g(planes)
    assert not torch.equal(g.blocks[0].conv_0.weight_u, u_before)


# -- the encoder mode ------------------------------------------------------------------------------

def test_encoder_mode_phases_update_only_their_modules():
    family = tiny(use_encoder=True)
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    assert [(p.name, p.modules) for p in family.phases()] == [("D", ("D",)), ("G", ("G", "E"))]
    for phase in family.phases():
        before = {k: copy.deepcopy(m.state_dict()) for k, m in nets.items()}
        logs = run_phase(phase, batch_for(SPEC), nets, optimizers)
        assert all(math.isfinite(v) for v in logs.values())
        for key, module in nets.items():
            changed = any(not torch.equal(before[key][p], v) for p, v in module.state_dict().items()
                          if v.dtype.is_floating_point and "running" not in p)
            assert changed == (key in phase.modules), f"phase {phase.name}: {key} changed={changed}"
    assert "g_kl" in logs


def test_encoder_mode_samples_varied_images_and_follows_exemplars():
    family = tiny(use_encoder=True)
    family.nets.eval()
    batch = batch_for(SPEC, n=4)
    first, second = family.generate(4, batch.label_maps), family.generate(4, batch.label_maps)
    assert not torch.allclose(first, second)  # z ~ N(0, I) differs per call
    exemplar = ExemplarCondition(batch.label_maps, batch.images, batch.label_maps)
    torch.testing.assert_close(family.generate(4, exemplar), family.generate(4, exemplar))  # z = mu: deterministic


def test_generate_refuses_a_wrong_condition():
    family = tiny()
    maps = batch_for(SPEC, n=3).label_maps
    with pytest.raises(DataError, match="3 label maps for 4"):
        family.generate(4, maps)
    with pytest.raises(DataError, match="use_encoder"):
        family.generate(3, ExemplarCondition(maps, torch.zeros(3, 3, 16, 16), maps))


# -- export ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_encoder", [False, True])
def test_export_translates_one_hot_planes_deterministically(use_encoder):
    family = tiny(use_encoder=use_encoder)
    family.nets.eval()
    exported = family.export_generator().eval()
    assert (exported.condition_shape, exported.condition_kind) == ((4, 16, 16), "label_map")
    maps = batch_for(SPEC, n=3).label_maps
    planes = one_hot_maps(maps, 4)
    with torch.no_grad():
        expected = (family.nets["G"](planes, torch.zeros(3, 4)) if use_encoder else family.generate(3, maps))
        torch.testing.assert_close(exported(planes), expected)
        torch.testing.assert_close(exported(planes), exported(planes))


def test_exported_generator_survives_mlflow_pt2_round_trip(tmp_path):
    mlflow_pytorch = pytest.importorskip("mlflow.pytorch")
    family = tiny(use_encoder=True)
    family.nets.eval()
    exported = family.export_generator().eval()
    example = exported.example_inputs(4)
    mlflow_pytorch.save_model(exported, str(tmp_path / "model"), input_example=example.numpy(),
                              serialization_format="pt2", pip_requirements=["torch"])
    loaded = mlflow_pytorch.load_model(str(tmp_path / "model"))
    for n in (1, 3):  # the registry checks every batch size works
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            assert torch.allclose(loaded(inputs), exported(inputs), atol=1e-5)
