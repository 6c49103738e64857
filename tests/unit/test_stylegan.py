"""StyleGAN: R1 and the logistic losses against hand values, AdaIN and noise, truncation and style mixing."""

import math

import pytest
import torch
from torch import nn

from components import losses
from components.families import DataSpec, ImageBatch, build_family
from components.nets.style import AdaIN, MappingNetwork, NoiseInjection, StyleGenerator
from components.training.checkpoint import TrainingState, load_family, save_checkpoint

TINY = {"z_dim": 4, "w_dim": 4, "mapping_layers": 2, "width_base": 8, "max_width": 4}


def tiny_stylegan(image_size=28, **overrides):
    torch.manual_seed(0)
    family = build_family("stylegan", DataSpec(channels=1, image_size=image_size), {**TINY, **overrides})
    with torch.no_grad():  # a trained-looking generator: non-zero noise strengths and a w_avg away from 0
        for name, parameter in family.nets["G"].named_parameters():
            if name.endswith("noise.weight"):
                parameter.normal_()
        family.nets["G"].w_avg.normal_()
    family.nets.eval()
    return family


class ConstantGenerator(nn.Module):
    """Ignores its inputs (and the mixing arguments): every pixel is ``value``."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, z, **kwargs):
        return torch.full((z.size(0), 1, 8, 8), self.value)


class MeanScore(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * x.flatten(1).mean(1)


# --- losses --------------------------------------------------------------------------------------


def test_r1_penalty_hand_value():
    x = torch.tensor([[1.0, 2.0], [0.0, 3.0]], requires_grad=True)
    scores = (x ** 2).sum(1)  # gradient 2x: squared norms 4 (1 + 4) = 20 and 4 (0 + 9) = 36
    penalty = losses.r1_penalty(scores, x)
    assert penalty.item() == pytest.approx(28.0)
    penalty.backward()  # differentiable: d/dx mean(4 |x|^2) = 4x
    assert torch.allclose(x.grad, torch.tensor([[4.0, 8.0], [0.0, 12.0]]))


def test_logistic_losses_hand_values():
    real, fake = torch.tensor([0.0, 0.0]), torch.tensor([math.log(3.0)])
    # softplus(-0) = ln 2, softplus(ln 3) = ln 4
    assert losses.bce_discriminator_loss(real, fake).item() == pytest.approx(3 * math.log(2.0))
    # softplus(-ln 3) = ln(4 / 3)
    assert losses.nonsaturating_generator_loss(fake).item() == pytest.approx(math.log(4 / 3))


def test_discriminator_loss_is_logistic_plus_half_gamma_r1():
    family = build_family("stylegan", DataSpec(channels=1, image_size=8), TINY)
    nets = {"G": ConstantGenerator(0.0), "D": MeanScore(8.0)}
    loss, logs = family.discriminator_loss(ImageBatch(torch.ones(4, 1, 8, 8)), nets)
    # D(real) = 8, D(fake) = 0; grad of 8 x mean over 64 px is 1/8 per pixel: |grad|^2 = 64 / 64 = 1
    expected = math.log1p(math.exp(-8.0)) + math.log(2.0) + 0.5 * 10.0 * 1.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert logs["r1"] == pytest.approx(1.0, rel=1e-6)


def test_paper_hyperparameters():
    family = build_family("stylegan", DataSpec(channels=1, image_size=28))
    cfg = family.config
    assert (cfg.r1_gamma, cfg.style_mixing_prob, cfg.mapping_layers, cfg.mapping_lr_multiplier) == (10.0, 0.9, 8, 0.01)
    assert cfg.truncation_psi == 1.0
    for optimizer in family.build_optimizers().values():
        group = optimizer.param_groups[0]
        assert isinstance(optimizer, torch.optim.Adam) and group["lr"] == 1e-3 and group["betas"] == (0.0, 0.99)


# --- blocks --------------------------------------------------------------------------------------


def test_adain_normalises_each_channel_then_applies_the_style():
    adain = AdaIN(channels=1, w_dim=2)
    with torch.no_grad():
        adain.style.weight.zero_()
        adain.style.bias.copy_(torch.tensor([1.0, 0.5]))  # y_s = 1 + 1 = 2, y_b = 0.5
    x = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)  # mean 2, std 1 -> (-1, 1)
    assert adain(x, torch.zeros(1, 2)).flatten().tolist() == pytest.approx([-1.5, 2.5])


def test_adain_style_comes_from_w():
    torch.manual_seed(0)
    adain = AdaIN(channels=3, w_dim=4)
    x = torch.randn(2, 3, 5, 5)
    w = torch.randn(1, 4).repeat(2, 1)
    out = adain(x, w)
    style = adain.style(w).view(2, 2, 3, 1, 1)
    normalised = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), unbiased=False, keepdim=True)
    assert torch.allclose(out, normalised * (1 + style[:, 0]) + style[:, 1], atol=1e-5)


def test_noise_is_scaled_per_channel():
    noise = NoiseInjection(2)
    with torch.no_grad():
        noise.weight.copy_(torch.tensor([0.0, 2.0]))
    out = noise(torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 1, 1))
    assert out.flatten().tolist() == [0.0, 2.0]


def test_mapping_normalises_z_and_uses_the_slow_learning_rate():
    mapping = MappingNetwork(4, 6, layers=8, lr_multiplier=0.01)
    assert len(mapping.layers) == 8
    assert all(layer.weight_scale == pytest.approx(0.01 * math.sqrt(2 / layer.weight.size(1)))
               for layer in mapping.layers)
    z = torch.randn(3, 4)
    assert torch.allclose(mapping(z), mapping(5 * z), atol=1e-5)  # pixel norm: only z's direction matters


def test_generator_has_two_style_layers_per_resolution_and_makes_data_sized_images():
    for size, layers in [(28, 6), (32, 8), (8, 4)]:
        generator = StyleGenerator(4, 4, 1, size, [4] * (layers // 2))
        assert generator.num_layers == layers
        assert generator(torch.randn(2, 4)).shape == (2, 1, size, size)


def test_noise_changes_images_only_when_random():
    family = tiny_stylegan()
    generator = family.nets["G"]
    z = torch.randn(2, 4)
    with torch.no_grad():
        assert not torch.equal(generator(z), generator(z))
        assert torch.equal(generator(z, noise="none"), generator(z, noise="none"))
        assert torch.equal(generator(z, noise="const"), generator(z, noise="const"))


# --- truncation ----------------------------------------------------------------------------------


def test_truncation_psi_zero_gives_the_average_w_image_for_any_z():
    family = tiny_stylegan()
    generator = family.nets["G"]
    images = family.generate_truncated(5, 0.0, noise="none")
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)
    with torch.no_grad():
        ws = generator.styles(torch.randn(3, 4), truncation_psi=0.0)
        from_average = generator.synthesis(generator.w_avg.expand(1, generator.num_layers, -1), noise="none")
    assert torch.allclose(ws, generator.w_avg.expand_as(ws))
    assert torch.allclose(images[:1], from_average.clamp(-1, 1), atol=1e-6)


def test_truncation_psi_one_is_untruncated_and_psi_interpolates_w():
    family = tiny_stylegan()
    generator = family.nets["G"]
    torch.manual_seed(3)
    truncated = family.generate_truncated(4, 1.0, noise="none")
    torch.manual_seed(3)
    z = torch.randn(4, 4)
    with torch.no_grad():
        w = generator.mapping(z)
        plain = generator.synthesis(w.unsqueeze(1).expand(-1, generator.num_layers, -1), noise="none")
        assert torch.equal(truncated, plain.clamp(-1, 1))
        half = generator.styles(z, truncation_psi=0.5)
    assert torch.allclose(half, ((w + generator.w_avg) / 2).unsqueeze(1).expand_as(half), atol=1e-6)


def test_evaluation_samples_use_the_configured_psi():
    family = silence_noise(tiny_stylegan(truncation_psi=0.0))
    images = family.generate(3)
    assert images.shape == (3, 1, 28, 28)
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)


def silence_noise(family):
    """Zero every noise strength, so random noise changes nothing and only w decides an image."""
    with torch.no_grad():
        for module in family.nets["G"].modules():
            if isinstance(module, NoiseInjection):
                module.weight.zero_()
    return family


def test_truncated_variant_at_psi_zero_is_the_average_w_image():
    family = silence_noise(tiny_stylegan(variant_psi=0.0))
    generator = family.nets["G"]
    images = family.sample_variants(5)["psi_0"]
    with torch.no_grad():
        from_average = generator.synthesis(generator.w_avg.expand(1, generator.num_layers, -1), noise="none")
    assert torch.allclose(images, from_average.clamp(-1, 1).expand_as(images), atol=1e-6)


def test_truncated_variant_at_psi_one_is_ordinary_sampling():
    family = tiny_stylegan(variant_psi=1.0)  # random noise kept: it must be drawn as generate draws it
    torch.manual_seed(7)
    variant = family.sample_variants(4)["psi_1"]
    torch.manual_seed(7)
    assert torch.equal(variant, family.generate(4))


def test_sample_variants_are_the_paper_psi_and_style_mixing():
    family = tiny_stylegan()
    torch.manual_seed(2)
    variants = family.sample_variants(3)
    assert set(variants) == {"psi_0.7", "style_mixed"}
    assert all(images.shape == (3, 1, 28, 28) and images.abs().max() <= 1 for images in variants.values())
    torch.manual_seed(2)
    assert torch.equal(variants["psi_0.7"], family.generate_truncated(3, 0.7))


# --- style mixing --------------------------------------------------------------------------------


def test_mixing_at_layer_zero_is_the_second_latent_and_at_the_end_the_first():
    family = tiny_stylegan()
    generator, layers = family.nets["G"], family.num_layers
    z_a, z_b = torch.randn(3, 4), torch.randn(3, 4)
    with torch.no_grad():
        only_a, only_b = generator(z_a, noise="none"), generator(z_b, noise="none")
    assert torch.equal(family.mix_styles(z_a, z_b, 0, noise="none"), only_b.clamp(-1, 1))
    assert torch.equal(family.mix_styles(z_a, z_b, layers, noise="none"), only_a.clamp(-1, 1))
    between = family.mix_styles(z_a, z_b, layers // 2, noise="none")
    assert not torch.allclose(between, only_a.clamp(-1, 1)) and not torch.allclose(between, only_b.clamp(-1, 1))
    with torch.no_grad():
        ws = generator.styles(z_a, mix_latents=z_b, crossover=2)
        w_a, w_b = generator.mapping(z_a), generator.mapping(z_b)
    assert torch.equal(ws[:, :2], w_a.unsqueeze(1).expand(-1, 2, -1))  # coarse layers from z_a
    assert torch.equal(ws[:, 2:], w_b.unsqueeze(1).expand(-1, layers - 2, -1))  # fine layers from z_b
    with pytest.raises(ValueError, match="crossover"):
        family.mix_styles(z_a, z_b, layers + 1)


def test_training_mixes_styles_with_probability_point_nine():
    family = tiny_stylegan()
    layers = family.num_layers
    torch.manual_seed(0)
    inputs = family.mixing_inputs(20_000, torch.device("cpu"))
    crossover = inputs["crossover"]
    assert inputs["mix_latents"].shape == (20_000, 4)
    assert crossover.min() >= 1 and crossover.max() <= layers
    mixed = (crossover < layers).float().mean().item()
    assert mixed == pytest.approx(0.9, abs=0.01)
    assert set(crossover[crossover < layers].tolist()) == set(range(1, layers))
    assert tiny_stylegan(style_mixing_prob=0.0).mixing_inputs(4, torch.device("cpu")) == {}


def test_style_mixed_variant_feeds_w1_to_the_coarse_layers_and_w2_from_the_crossover_on():
    family = tiny_stylegan()
    generator, layers = family.nets["G"], family.num_layers
    calls = []  # ("w", mapping output) and ("ws", per-layer styles into the synthesis), in call order
    hooks = [generator.mapping.register_forward_hook(lambda module, args, out: calls.append(("w", out))),
             generator.synthesis.register_forward_pre_hook(lambda module, args: calls.append(("ws", args[0])))]
    torch.manual_seed(0)
    family.sample_variants(300)
    for hook in hooks:
        hook.remove()
    # the mixed synthesis is the one fed by two mappings: w1 of the first latents, then w2 of the second
    mixed = [i for i, (kind, _) in enumerate(calls) if kind == "ws" and [k for k, _ in calls[i - 2:i]] == ["w", "w"]]
    assert len(mixed) == 1
    (_, w1), (_, w2), (_, ws) = calls[mixed[0] - 2:mixed[0] + 1]
    crossovers = set()
    for row in range(300):
        k = int((ws[row] == w1[row]).all(dim=1).long().cumprod(0).sum())  # leading layers styled by w1
        assert 1 <= k < layers  # every sample is mixed
        assert torch.equal(ws[row, :k], w1[row].expand(k, -1))
        assert torch.equal(ws[row, k:], w2[row].expand(layers - k, -1))
        crossovers.add(k)
    assert crossovers == set(range(1, layers))  # crossovers drawn as in training: uniform in 1..L-1


# --- w_avg ---------------------------------------------------------------------------------------


def test_generator_step_moves_w_avg_towards_the_batch_mean_w():
    family = tiny_stylegan()
    generator = family.nets["G"]
    family.nets.train()
    start = generator.w_avg.clone()
    torch.manual_seed(5)
    family.generator_loss(ImageBatch(torch.zeros(6, 1, 28, 28)), dict(family.nets.items()))
    torch.manual_seed(5)
    z = torch.randn(6, 4)  # the generator step's first draw: its primary latents
    with torch.no_grad():
        expected = 0.995 * start + 0.005 * generator.mapping(z).mean(0)
    assert torch.allclose(generator.w_avg, expected, atol=1e-6)


def test_w_avg_and_fixed_noise_survive_a_checkpoint(tmp_path):
    family = tiny_stylegan()
    save_checkpoint(tmp_path / "ckpt", family, family.build_optimizers(), TrainingState(step=1))
    restored, _ = load_family(tmp_path / "ckpt")
    assert torch.equal(restored.nets["G"].w_avg, family.nets["G"].w_avg)
    restored.nets.eval()
    z = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(restored.nets["G"](z, truncation_psi=0.5, noise="const"),
                           family.nets["G"](z, truncation_psi=0.5, noise="const"))


# --- export --------------------------------------------------------------------------------------


def test_export_is_deterministic_and_traceable_with_any_batch_size():
    family = tiny_stylegan(truncation_psi=0.7)
    exported = family.export_generator()
    assert not exported.training
    example = exported.example_inputs(4)
    with torch.no_grad():
        assert torch.equal(exported(example), exported(example))  # fixed noise maps
        expected = family.nets["G"](example, truncation_psi=0.7, noise="const").clamp(-1, 1)
        assert torch.equal(exported(example), expected)
    program = torch.export.export(exported, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        z = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            assert torch.allclose(program.module()(z), exported(z), atol=1e-5)
