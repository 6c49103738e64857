"""MUNIT: its losses and AdaIN against hand values, the wiring of G's pass and D's step, multimodal and
reference-guided sampling, shapes at 16/32/64 and the export."""

import math

import pytest
import torch
from torch import nn

from components.errors import ConfigError, DataError
from components.families import DataSpec, DomainCondition, ImageBatch, build_family, get_family
from components.families.munit import (AdaINResidualBlock, adaptive_instance_norm, logit_side,
                                       lsgan_multiscale_discriminator_loss, lsgan_multiscale_generator_loss,
                                       munit_generator_objective, reconstruction_terms)

SPEC = DataSpec(channels=3, image_size=16, num_classes=3, num_domains=2)


def tiny(spec=SPEC, **overrides):
    torch.manual_seed(0)
    family = build_family("munit", spec, {**get_family("munit").tiny, **overrides})
    family.nets.eval()
    return family


def square(*values):
    """Four values as a 1 x 1 x 2 x 2 map, row by row."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


def images(n, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- pure losses ----------------------------------------------------------------------------------


def test_reconstruction_terms_hand_values():
    x_a, x_b = square(0.0, 0.5, -0.5, 1.0), square(1.0, 1.0, -1.0, 0.0)
    outputs = {
        "recon_a": square(0.5, 0.5, -0.5, 0.0),  # |diff| 0.5, 0, 0, 1: mean 0.375
        "recon_b": square(1.0, 0.0, -1.0, 0.0),  # 0, 1, 0, 0: mean 0.25
        "content_a": square(1.0, 2.0, 3.0, 4.0), "content_a_back": square(1.0, 2.0, 3.0, 0.0),  # 0, 0, 0, 4: 1.0
        "content_b": square(0.0, 0.0, 0.0, 0.0), "content_b_back": square(0.5, -0.5, 0.5, -0.5),  # 0.5
        "style_a_back": torch.tensor([[1.0, 2.0]]), "style_b_back": torch.tensor([[0.0, 0.0]]),
    }
    styles_a, styles_b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, -1.0]])  # |diffs| 1, 2 (1.5); 3, 1 (2)
    terms = reconstruction_terms(outputs, x_a, x_b, styles_a, styles_b)
    assert set(terms) == {"image", "content", "style"}
    assert terms["image"].item() == pytest.approx(0.375 + 0.25)
    assert terms["content"].item() == pytest.approx(1.0 + 0.5)
    assert terms["style"].item() == pytest.approx(1.5 + 2.0)
    # the cycle images, when there: x_{A->B->A} and x_{B->A->B} against the inputs
    outputs.update(cycle_a=x_a + 0.25, cycle_b=x_b - 1.0)
    assert reconstruction_terms(outputs, x_a, x_b, styles_a, styles_b)["cycle"].item() == pytest.approx(1.25)


def test_generator_objective_weights_the_terms_as_the_paper():
    terms = {"image": torch.tensor(0.625), "content": torch.tensor(1.5), "style": torch.tensor(3.5)}
    # 2 + 10 * 0.625 + 1 * 1.5 + 1 * 3.5 = 13.25
    assert munit_generator_objective(torch.tensor(2.0), terms, 10.0, 1.0, 1.0).item() == pytest.approx(13.25)
    # lambda_c = 2, lambda_s = 0.5: 2 + 6.25 + 3 + 1.75 = 13
    assert munit_generator_objective(torch.tensor(2.0), terms, 10.0, 2.0, 0.5).item() == pytest.approx(13.0)
    # a cycle term counts with its weight, and not at all with weight 0
    with_cycle = {**terms, "cycle": torch.tensor(1.0)}
    assert munit_generator_objective(torch.tensor(2.0), with_cycle, 10.0, 1.0, 1.0, 0.0).item() == pytest.approx(13.25)
    assert munit_generator_objective(torch.tensor(2.0), with_cycle, 10.0, 1.0, 1.0, 10.0).item() == pytest.approx(23.25)


def test_lsgan_losses_sum_the_unhalved_terms_over_scales():
    real = [torch.tensor([1.0, 0.0]), torch.tensor([0.5])]
    fake = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0])]
    # scale 0: E[(r - 1)^2] = (0 + 1) / 2 = 0.5, E[f^2] = 0.5; scale 1: 0.25 and 1: total 2.25
    assert lsgan_multiscale_discriminator_loss(real, fake).item() == pytest.approx(2.25)
    # G: scale 0 E[(f - 1)^2] = (1 + 0) / 2 = 0.5; scale 1 (-2)^2 = 4
    assert lsgan_multiscale_generator_loss(fake).item() == pytest.approx(4.5)


# -- AdaIN ----------------------------------------------------------------------------------------

X = square(1.0, 2.0, 3.0, 4.0)
# mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25: normalised (x - 2.5) / sqrt(1.25)
# = (-3, -1, 1, 3) / sqrt(5); with gamma 2, beta 0.5: 2 (-3, -1, 1, 3) / sqrt(5) + 0.5
ROOT5 = math.sqrt(5)
ADAIN_X = [2 * v / ROOT5 + 0.5 for v in (-3, -1, 1, 3)]  # -2.18328, -0.39443, 1.39443, 3.18328


def test_adain_normalises_per_instance_and_channel_then_applies_the_mlp_scale_and_bias():
    out = adaptive_instance_norm(X, torch.tensor([[2.0]]), torch.tensor([[0.5]]), eps=0.0)
    torch.testing.assert_close(out.flatten(), torch.tensor(ADAIN_X), atol=1e-6, rtol=0)
    # the default eps (1e-5) moves the result by less than 1e-5 relative
    out = adaptive_instance_norm(X, torch.tensor([[2.0]]), torch.tensor([[0.5]]))
    torch.testing.assert_close(out.flatten(), torch.tensor(ADAIN_X), atol=1e-4, rtol=0)


def test_adain_statistics_are_each_instance_and_channel_own():
    # channel 1 is channel 0 times 10 plus 7 (same normalised map); instance 1 is instance 0 negated
    x = torch.cat([X, X * 10 + 7], dim=1)
    x = torch.cat([x, -x])
    gamma = torch.tensor([[2.0, 1.0], [2.0, -1.0]])
    beta = torch.tensor([[0.5, 0.0], [0.5, 3.0]])
    out = adaptive_instance_norm(x, gamma, beta, eps=0.0)
    unit = torch.tensor([-3.0, -1.0, 1.0, 3.0]) / ROOT5
    torch.testing.assert_close(out[0, 0].flatten(), 2 * unit + 0.5)
    torch.testing.assert_close(out[0, 1].flatten(), unit)
    torch.testing.assert_close(out[1, 0].flatten(), -2 * unit + 0.5)  # negated input: negated normalised map
    torch.testing.assert_close(out[1, 1].flatten(), unit + 3.0)  # -(-unit) + 3


def test_adain_residual_block_reads_its_params_as_gamma_1_beta_1_gamma_2_beta_2():
    block = AdaINResidualBlock(1)
    with torch.no_grad():
        for layer in (block.conv_1, block.conv_2):  # identity convolutions
            layer.weight.zero_()
            layer.weight[0, 0, 1, 1] = 1.0
            layer.bias.zero_()
    # AdaIN_1(x; 2, 0.5) = ADAIN_X; ReLU -> (0, 0, 1.39443, 3.18328): mean 1.14443, biased var 1.70971;
    # AdaIN_2(.; 1, 0) -> (-0.87524, -0.87524, 0.19120, 1.55928); plus the shortcut x = (1, 2, 3, 4)
    out = block(X, torch.tensor([[2.0, 0.5, 1.0, 0.0]]))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.12476, 1.12476, 3.19120, 5.55928]), atol=1e-4, rtol=0)


def test_the_decoder_mlp_feeds_every_adain_layer():
    family = tiny(residual_blocks=2)
    decoder = family.nets["G"].domains[0].decoder
    assert decoder.mlp[-1].out_features == sum(4 * block.channels for block in decoder.blocks)
    seen = []
    for block in decoder.blocks:
        block.register_forward_hook(lambda module, args, output: seen.append(args[1]))
    style = torch.randn(2, 8)
    decoder(torch.randn(2, decoder.blocks[0].channels, 4, 4), style)
    torch.testing.assert_close(torch.cat(seen, dim=1), decoder.mlp(style))


# -- the networks ---------------------------------------------------------------------------------


def test_norms_are_where_the_paper_puts_them():
    autoencoder = tiny().nets["G"].domains[0]
    kinds = lambda net: {type(m) for m in net.modules()}  # noqa: E731
    assert nn.InstanceNorm2d in kinds(autoencoder.content_encoder)
    assert not kinds(autoencoder.style_encoder) & {nn.InstanceNorm2d, nn.GroupNorm, nn.BatchNorm2d}
    layer_norms = [m for m in autoencoder.decoder.upsample.modules() if isinstance(m, nn.GroupNorm)]
    assert layer_norms and all(m.num_groups == 1 for m in layer_norms)  # one group: layer norm
    assert isinstance(autoencoder.decoder.upsample[-1], nn.Tanh)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("defaults", [False, True])
def test_codes_images_and_logits_have_their_shapes(size, defaults):
    spec = DataSpec(channels=3, image_size=size, num_domains=2)
    family = build_family("munit", spec) if defaults else tiny(spec)
    cfg, generator = family.config, family.nets["G"]
    x = images(3, size)
    for domain in (0, 1):
        content, style = generator.domains[domain].encode(x)
        assert content.shape == (3, cfg.width * 2 ** cfg.downsamples, size // 4, size // 4)
        assert style.shape == (3, cfg.style_dim)
        out = generator.domains[domain].decoder(content, style)
        assert out.shape == (3, 3, size, size) and out.abs().max() <= 1
    scores_a, scores_b = family.nets["D"](x, x[:2])
    for scale, (a, b) in enumerate(zip(scores_a, scores_b)):
        side = logit_side(size, scale, cfg.d_layers)
        assert a.shape == (3, 1, side, side) and b.shape == (2, 1, side, side)


def test_sizes_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="divisible"):
        build_family("munit", DataSpec(channels=3, image_size=18, num_domains=2))
    with pytest.raises(ConfigError, match="coarsest scale"):
        build_family("munit", DataSpec(channels=3, image_size=16, num_domains=2), {"d_scales": 3})
    with pytest.raises(ConfigError, match="style downsamplings"):
        build_family("munit", DataSpec(channels=3, image_size=16, num_domains=2), {"style_downsamples": 5})


def test_optimizers_are_the_papers_adam_with_weight_decay():
    optimizers = tiny().build_optimizers()
    assert set(optimizers) == {"G", "D"}
    for optimizer in optimizers.values():
        group = optimizer.param_groups[0]
        assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.5, 0.999), 1e-4)


# -- what G's pass and D's step compute ------------------------------------------------------------


def test_generator_pass_translates_with_the_given_styles_and_reencodes_the_translations():
    family = tiny(cycle_weight=10.0)
    generator = family.nets["G"]
    a, b = images(2, seed=1), images(3, seed=2)
    styles_a, styles_b = torch.randn(3, 8), torch.randn(2, 8)  # for the 3 B -> A and the 2 A -> B images
    with torch.no_grad():
        out = generator(a, b, styles_a, styles_b, cycle=True)
        auto_a, auto_b = generator.domains
        content_a, own_style_a = auto_a.encode(a)
        close = lambda x, y: torch.testing.assert_close(x, y, atol=1e-6, rtol=0)  # noqa: E731
        close(out["recon_a"], auto_a.decoder(content_a, own_style_a))
        close(out["fake_ab"], generator.translate(a, 0, styles_b))
        close(out["fake_ba"], generator.translate(b, 1, styles_a))
        close(out["content_a_back"], auto_b.content_encoder(out["fake_ab"]))
        close(out["style_b_back"], generator.style_of(out["fake_ab"], 1))
        close(out["style_a_back"], generator.style_of(out["fake_ba"], 0))
        close(out["cycle_a"], auto_a.decoder(out["content_a_back"], own_style_a))
    assert "cycle_a" not in generator(a, b, styles_a, styles_b)


def test_generator_step_logs_every_term_and_the_cycle_only_when_weighted():
    family = tiny()
    batch = ImageBatch(images(6), domains=torch.arange(6) % 2)
    loss, logs = family.generator_loss(batch, family.nets)
    assert set(logs) == {"g_loss", "g_adv", "g_recon_image", "g_recon_content", "g_recon_style"}
    expected = logs["g_adv"] + 10 * logs["g_recon_image"] + logs["g_recon_content"] + logs["g_recon_style"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    _, logs = tiny(cycle_weight=10.0).generator_loss(batch, family.nets)
    assert "g_recon_cycle" in logs


def test_discriminator_step_judges_reals_against_translations_with_fresh_styles():
    family = tiny()
    batch = ImageBatch(images(6), domains=torch.tensor([0, 1, 1, 0, 1, 1]))
    a, b = batch.images[[0, 3]], batch.images[[1, 2, 4, 5]]
    torch.manual_seed(5)
    loss, logs = family.discriminator_loss(batch, family.nets)
    torch.manual_seed(5)
    generator, d = family.nets["G"], family.nets["D"]
    with torch.no_grad():
        fake_ba = generator.translate(b, 1, torch.randn(4, 8))
        fake_ab = generator.translate(a, 0, torch.randn(2, 8))
        real_a, real_b = d(a, b)
        fake_a, fake_b = d(fake_ba, fake_ab)
    expected = (lsgan_multiscale_discriminator_loss(real_a, fake_a)
                + lsgan_multiscale_discriminator_loss(real_b, fake_b))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["d_loss"] == pytest.approx(logs["d_loss_a"] + logs["d_loss_b"], rel=1e-5)


def test_a_batch_without_both_domains_is_refused():
    family = tiny()
    with pytest.raises(DataError, match="both domains"):
        family.discriminator_loss(ImageBatch(images(4), domains=torch.zeros(4, dtype=torch.long)), family.nets)


# -- sampling ---------------------------------------------------------------------------------------


def condition(n=4, references=None):
    source = torch.arange(n) % 2
    return DomainCondition(images(n, seed=3), source, 1 - source, references)


def test_sampled_styles_make_different_outputs_and_a_given_style_the_same():
    family = tiny()
    cond = condition()
    first, second = family.generate(4, cond), family.generate(4, cond)
    assert (first - second).abs().flatten(1).max(dim=1).values.min() > 1e-4  # every image changed
    style = torch.randn(2, 8)
    a_images = cond.images[cond.source == 0]
    torch.testing.assert_close(family.translate(a_images, 0, style), family.translate(a_images, 0, style),
                               rtol=0, atol=0)
    assert not torch.allclose(family.translate(a_images, 0, style), family.translate(a_images, 0, -style))


def test_reference_guided_output_decodes_with_the_target_style_encoders_code_of_the_reference():
    family = tiny()
    references = images(4, seed=9)
    cond = condition(references=references)
    out = family.generate(4, cond)
    generator = family.nets["G"]
    with torch.no_grad():
        for row in range(4):
            source, target = int(cond.source[row]), int(cond.target[row])
            style = generator.style_of(references[row:row + 1], target)
            expected = generator.translate(cond.images[row:row + 1], source, style)
            torch.testing.assert_close(out[row:row + 1], expected, atol=1e-5, rtol=0)
    # the output follows the reference: another reference, another output; the same, the same (no sampling)
    torch.testing.assert_close(family.generate(4, cond), out, rtol=0, atol=0)
    assert not torch.allclose(family.generate(4, condition(references=images(4, seed=10))), out)


def test_a_target_equal_to_the_source_restyles_within_the_domain():
    family = tiny()
    x, references = images(2, seed=4), images(2, seed=5)
    same = torch.tensor([0, 1])
    out = family.generate(2, DomainCondition(x, same, same, references))
    generator = family.nets["G"]
    with torch.no_grad():
        for row, domain in enumerate((0, 1)):
            autoencoder = generator.domains[domain]
            expected = autoencoder.decoder(autoencoder.content_encoder(x[row:row + 1]),
                                           autoencoder.style_encoder(references[row:row + 1]))
            torch.testing.assert_close(out[row:row + 1], expected, atol=1e-5, rtol=0)


def test_generate_refuses_bad_conditions():
    family = tiny()
    with pytest.raises(DataError, match="DomainCondition"):
        family.generate(4, images(4))
    with pytest.raises(DataError, match="3 source images for 4"):
        family.generate(4, condition(3))
    with pytest.raises(DataError, match="0 \\(A\\) or 1 \\(B\\)"):
        family.generate(2, DomainCondition(images(2), torch.tensor([0, 2]), torch.tensor([1, 0])))


# -- the export -------------------------------------------------------------------------------------


def test_export_mixes_both_directions_by_the_target_plane():
    family = tiny()
    exported = family.export_generator()
    assert exported.condition_shape == (3 + 1 + 8, 16, 16) and exported.condition_kind == "image_target_style"
    x, styles = images(4, seed=6), torch.randn(4, 8)
    target = torch.tensor([1, 0, 0, 1])  # 1: A -> B, 0: B -> A
    with torch.no_grad():
        out = exported(exported.inputs(x, target, styles))
    for row in range(4):
        source = 1 - int(target[row])
        expected = family.translate(x[row:row + 1], source, styles[row:row + 1])
        torch.testing.assert_close(out[row:row + 1], expected, atol=1e-5, rtol=0)


def test_export_is_a_snapshot_that_torch_export_traces_for_any_batch_size():
    family = tiny()
    exported = family.export_generator()
    inputs = exported.example_inputs(6)
    assert inputs.shape == (6, 12, 16, 16)
    torch.testing.assert_close(inputs[:, 3], (1 - torch.arange(6) % 2).float().view(6, 1, 1).expand(6, 16, 16))
    program = torch.export.export(exported, (inputs,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        batch = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(batch), exported(batch), atol=1e-5, rtol=0)
    with torch.no_grad():  # later training does not move the registered snapshot
        before = exported(inputs)
        for p in family.nets["G"].parameters():
            p.add_(1.0)
        torch.testing.assert_close(exported(inputs), before, rtol=0, atol=0)
