"""SEAN: region-wise style pooling, the style map, the region-adaptive norm, style transfer and export."""

import pytest
import torch
from torch.nn import functional as F

from components.errors import ConfigError, DataError
from components.families import DataSpec, ExemplarCondition, ImageBatch, build_family, one_hot_maps
from components.families.sean import (RegionAdaptiveNorm, SEANGenerator, StyleEncoder, blend, class_style_map,
                                      patch_map_sizes, region_average_pool)
from components.training.loop import run_phase

SPEC32 = DataSpec(channels=3, image_size=32, num_classes=0, map_classes=5)
SMALL = {"g_width": 4, "style_dim": 4, "encoder_width": 4, "mask_hidden": 4, "d_width": 4}


def sean32(**overrides):
    torch.manual_seed(0)
    return build_family("sean", SPEC32, {**SMALL, **overrides})


def layouts(n, size=32, classes=5, seed=0):
    """Blocky label maps (4 x 4 cells of one class), so every class region is wider than a pixel."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(classes, (n, size // 4, size // 4), generator=g)
    return cells.repeat_interleave(4, 1).repeat_interleave(4, 2)


def images(n, size=32, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- pure functions -------------------------------------------------------------------------------


def test_region_average_pool_hand_values_with_an_absent_class():
    # features (1 x 2 x 2 x 2): channel 0 [[1, 2], [3, 4]], channel 1 [[10, 20], [30, 40]]
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])
    # class 0: the left column -> ((1 + 3) / 2, (10 + 30) / 2) = (2, 20)
    # class 1: the bottom-right pixel alone -> (4, 40)
    masks = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]],
                           [[0.0, 0.0], [0.0, 1.0]],
                           [[0.0, 0.0], [0.0, 0.0]],      # class 2: absent -> zeros, not 0 / 0
                           [[0.0, 0.5], [0.0, 1.0]]]])    # class 3: weights 0.5 and 1 (an area-downsampled mask)
    # class 3: (0.5 * 2 + 1 * 4) / 1.5 = 10/3 and (0.5 * 20 + 1 * 40) / 1.5 = 100/3
    styles = region_average_pool(features, masks)
    assert styles.shape == (1, 4, 2)
    expected = torch.tensor([[[2.0, 20.0], [4.0, 40.0], [0.0, 0.0], [10 / 3, 100 / 3]]])
    torch.testing.assert_close(styles, expected)


def test_region_average_pool_gradient_is_finite_for_an_absent_class():
    features = torch.randn(1, 3, 2, 2, requires_grad=True)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0] = 1.0  # class 1 absent
    region_average_pool(features, masks).sum().backward()
    assert torch.isfinite(features.grad).all()
    # class 0 covers all 4 pixels: d(mean)/d(pixel) = 1/4 per channel
    torch.testing.assert_close(features.grad, torch.full((1, 3, 2, 2), 0.25))


def test_class_style_map_gives_each_pixel_its_class_vector():
    # label map [[0, 1], [1, 2]]; styles c0 = (1, 2), c1 = (3, 4), c2 = (5, 6)
    # -> channel 0 [[1, 3], [3, 5]], channel 1 [[2, 4], [4, 6]]
    target = one_hot_maps(torch.tensor([[[0, 1], [1, 2]]]), 3)
    styles = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    expected = torch.tensor([[[[1.0, 3.0], [3.0, 5.0]], [[2.0, 4.0], [4.0, 6.0]]]])
    torch.testing.assert_close(class_style_map(target, styles), expected)


def test_blend_hand_value():
    # 0.25 * 2 + 0.75 * 4 = 3.5
    assert blend(torch.tensor(2.0), torch.tensor(4.0), torch.tensor(0.25)).item() == pytest.approx(3.5)


def test_patch_map_sizes_match_the_discriminator():
    from components.nets.patchgan import MultiScaleDiscriminator

    d = MultiScaleDiscriminator(4, scales=2, width=4, layers=2)
    out = d(torch.zeros(2, 4, 32, 32))
    assert [scale[-1].shape[-1] for scale in out] == patch_map_sizes(32, 2, 2) == [6, 2]


# --- the region-adaptive normalisation ------------------------------------------------------------


def norm_and_inputs(seed=0):
    torch.manual_seed(seed)
    norm = RegionAdaptiveNorm(channels=3, map_classes=3, style_dim=4, hidden=4)
    x = torch.randn(2, 3, 8, 8)
    target = one_hot_maps(layouts(2, size=8, classes=3, seed=seed), 3)
    styles = torch.randn(2, 3, 4)
    return norm, x, target, styles


def perturb_(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


def set_alpha_(norm, alpha_logit):
    with torch.no_grad():
        norm.blend_gamma_logit.fill_(alpha_logit)
        norm.blend_beta_logit.fill_(alpha_logit)


def test_alpha_starts_at_one_half():
    norm, *_ = norm_and_inputs()
    assert torch.sigmoid(norm.blend_gamma_logit).item() == 0.5 == torch.sigmoid(norm.blend_beta_logit).item()


def test_alpha_one_depends_only_on_the_styles():
    # sigmoid(+inf) = 1 exactly: gamma = gamma_s, beta = beta_s; the mask half's convolutions do not matter
    norm, x, target, styles = norm_and_inputs()
    set_alpha_(norm, float("inf"))
    out = norm(x, target, styles, noise=False)
    perturb_(norm.mask)
    assert torch.equal(norm(x, target, styles, noise=False), out)
    assert not torch.allclose(norm(x, target, styles + 1, noise=False), out)


def test_alpha_zero_depends_only_on_the_mask():
    # sigmoid(-inf) = 0 exactly: gamma = gamma_o, beta = beta_o (SPADE); styles and the style convs do not matter
    norm, x, target, styles = norm_and_inputs()
    set_alpha_(norm, float("-inf"))
    out = norm(x, target, styles, noise=False)
    assert torch.equal(norm(x, target, torch.randn_like(styles), noise=False), out)
    with torch.no_grad():
        norm.style_gamma_beta.weight.add_(1.0)
        norm.class_weight.add_(1.0)
    assert torch.equal(norm(x, target, styles, noise=False), out)
    perturb_(norm.mask)
    assert not torch.allclose(norm(x, target, styles, noise=False), out)


def test_constant_label_map_and_one_style_reduce_to_conditional_batch_norm():
    # every pixel of both samples is class 1 and both samples have the same class-1 style: the style map is one
    # constant vector, so gamma and beta are per-channel constants away from the border (zero padding of the
    # 3 x 3 convolutions: 1 pixel for the style half, 2 for SPADE's two convolutions) and
    # out = BN(x) (1 + gamma_c) + beta_c there, conditional batch norm with class 1's scale and shift
    norm, x, _, styles = norm_and_inputs()
    target = one_hot_maps(torch.ones(2, 8, 8, dtype=torch.long), 3)
    styles[1, 1] = styles[0, 1]
    gamma, beta = norm.modulation(target, styles, (8, 8))
    gamma_c, beta_c = gamma[0, :, 4, 4].view(1, 3, 1, 1), beta[0, :, 4, 4].view(1, 3, 1, 1)
    inner = (slice(None), slice(None), slice(2, 6), slice(2, 6))
    torch.testing.assert_close(gamma[inner], gamma_c.expand(2, 3, 4, 4))
    torch.testing.assert_close(beta[inner], beta_c.expand(2, 3, 4, 4))
    out = norm(x, target, styles, noise=False)
    batch_normed = F.batch_norm(x, None, None, training=True, eps=norm.mask.norm.eps)
    torch.testing.assert_close(out[inner], (batch_normed * (1 + gamma_c) + beta_c)[inner])


def test_a_class_style_changes_only_its_pixels_in_the_first_layer_gamma_s():
    generator = SEANGenerator(map_classes=3, channels=3, image_size=32, width=4, style_dim=4, encoder_width=4,
                              hidden=4)
    first = generator.blocks[0].norm_0
    label_map = torch.ones(1, 8, 8, dtype=torch.long)
    label_map[:, :, :3] = 0  # class 0: columns 0-2
    label_map[:, 6:, 5:] = 2
    target = one_hot_maps(label_map, 3)
    styles = torch.randn(1, 3, 4)
    changed = styles.clone()
    changed[:, 0] += 1.0
    gamma, _ = first.style_modulation(target, styles, (8, 8))
    gamma_changed, _ = first.style_modulation(target, changed, (8, 8))
    difference = (gamma_changed - gamma).abs().amax(dim=1)[0]  # 8 x 8
    # every class-0 pixel changes; beyond the 3 x 3 convolution's one-pixel reach of class 0 (columns 4-7) none does
    assert (difference[:, :3] > 0).all()
    assert torch.equal(difference[:, 4:], torch.zeros(8, 4))
    # before the convolution, the broadcast (fc'd) style map changes on class-0 pixels exactly
    def style_map(class_styles):
        return class_style_map(target, F.relu(torch.einsum("nms,mst->nmt", class_styles, first.class_weight)
                                              + first.class_bias))

    map_difference = style_map(changed) - style_map(styles)
    assert torch.equal(map_difference.abs().amax(dim=1)[0] > 0, label_map[0] == 0)


def test_zero_noise_scale_gives_deterministic_output():
    torch.manual_seed(0)
    generator = SEANGenerator(3, 3, 16, width=4, style_dim=4, encoder_width=4, hidden=4).eval()  # no power iteration
    target = one_hot_maps(layouts(2, size=16, classes=3), 3)
    exemplars = images(2, size=16)
    assert all(p.abs().sum() == 0 for name, p in generator.named_parameters() if name.endswith("noise_scale"))
    first = generator(target, exemplars, target, noise=True)
    assert torch.equal(generator(target, exemplars, target, noise=True), first)
    with torch.no_grad():
        for name, p in generator.named_parameters():
            if name.endswith("noise_scale"):
                p.fill_(0.5)
    assert not torch.equal(generator(target, exemplars, target, noise=True), first)
    without = generator(target, exemplars, target, noise=False)
    assert torch.equal(generator(target, exemplars, target, noise=False), without)


# --- styles of a generator ------------------------------------------------------------------------


def test_encode_styles_keeps_a_one_pixel_class_and_zeroes_an_absent_one():
    torch.manual_seed(0)
    generator = SEANGenerator(4, 3, 16, width=4, style_dim=4, encoder_width=4, hidden=4)
    label_map = torch.zeros(1, 16, 16, dtype=torch.long)
    label_map[0, 5, 7] = 1  # one pixel: a quarter of one half-resolution feature pixel
    label_map[0, 8:, :] = 2  # class 3 absent
    styles, present = generator.encode_styles(images(1, size=16), one_hot_maps(label_map, 4))
    assert present.tolist() == [[True, True, True, False]]
    features = generator.style_encoder(images(1, size=16))
    torch.testing.assert_close(styles[0, 1], features[0, :, 2, 3])  # the one pixel's feature pixel, alone
    assert torch.equal(styles[0, 3], torch.zeros(4))


def test_update_style_mean_hand_values():
    generator = SEANGenerator(2, 3, 16, width=4, style_dim=1, encoder_width=4, hidden=4)
    # first batch: class 0 sums 4 over 2 exemplars -> mean 2 at rate max(0.1, 1/1) = 1; class 1 unseen stays 0
    generator.update_style_mean(torch.tensor([[4.0], [0.0]]), torch.tensor([2.0, 0.0]), decay=0.9)
    assert generator.style_mean.flatten().tolist() == [2.0, 0.0]
    # second: batch means 4 and 3; class 0 at rate max(0.1, 1/2): 2 + (4 - 2) / 2 = 3; class 1 at rate 1: 3
    generator.update_style_mean(torch.tensor([[8.0], [3.0]]), torch.tensor([2.0, 1.0]), decay=0.9)
    assert generator.style_mean.flatten().tolist() == [3.0, 3.0]
    assert generator.style_mean_updates.tolist() == [2.0, 1.0]


def test_fill_absent_takes_the_tracked_mean_only_for_absent_classes():
    generator = SEANGenerator(2, 3, 16, width=4, style_dim=2, encoder_width=4, hidden=4)
    generator.style_mean.copy_(torch.tensor([[7.0, 7.0], [9.0, 9.0]]))
    styles = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    filled = generator.fill_absent(styles, torch.tensor([[True, False]]))
    assert filled.tolist() == [[[1.0, 2.0], [9.0, 9.0]]]


def test_the_g_phase_tracks_the_batch_mean_style_and_the_d_phase_does_not():
    family = sean32()
    generator = family.nets["G"]
    label_maps, real = layouts(6), images(6)
    maps = one_hot_maps(label_maps, 5)
    with torch.no_grad():
        styles, present = generator.encode_styles(real, maps)
    batch = ImageBatch(real, None, None, label_maps)
    nets, optimizers = dict(family.nets.items()), family.build_optimizers()
    d_phase, g_phase = family.phases()
    run_phase(d_phase, batch, nets, optimizers)
    assert torch.equal(generator.style_mean, torch.zeros(5, 4))
    run_phase(g_phase, batch, nets, optimizers)
    weights = present.float()
    expected = torch.einsum("nm,nms->ms", weights, styles) / weights.sum(0).clamp(min=1).unsqueeze(1)
    torch.testing.assert_close(generator.style_mean, expected)  # the first update is the batch's mean exactly


def test_g_loss_is_the_weighted_sum_of_its_terms():
    family = sean32(lambda_l1=3.0)
    batch = ImageBatch(images(4), None, None, layouts(4))
    _, logs = family.generator_loss(batch, dict(family.nets.items()))
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + 10.0 * logs["g_fm"] + 3.0 * logs["g_l1"], rel=1e-5)


# --- shapes at 32 x 32 ----------------------------------------------------------------------------


def test_networks_have_the_paper_shapes_at_32px():
    family = sean32()
    generator, discriminator = family.nets["G"], family.nets["D"]
    real, maps = images(3), one_hot_maps(layouts(3), 5)
    assert generator.style_encoder(real).shape == (3, 4, 16, 16)
    styles, present = generator.encode_styles(real, maps)
    assert styles.shape == (3, 5, 4) and present.shape == (3, 5)
    fake = generator(maps, real, maps)
    assert fake.shape == (3, 3, 32, 32) and fake.min() >= -1 and fake.max() <= 1
    outputs = discriminator(torch.cat([maps, fake], 1))
    assert [scale[-1].shape for scale in outputs] == [(3, 1, 6, 6), (3, 1, 2, 2)]
    assert [block.norm_0.styled for block in generator.blocks] == [True, True, True, False]  # 4, 8, 16 | 32 px


def test_style_encoder_halves_the_resolution():
    assert StyleEncoder(3, 8, 4)(torch.zeros(2, 3, 64, 64)).shape == (2, 8, 32, 32)


def test_condition_of_pairs_each_layout_with_the_previous_rows_exemplar():
    family = sean32()
    batch = ImageBatch(images(3), None, None, layouts(3))
    condition = family.condition_of(batch)
    assert isinstance(condition, ExemplarCondition)
    assert torch.equal(condition.label_maps, batch.label_maps)
    assert torch.equal(condition.exemplars[1], batch.images[0]) and torch.equal(condition.exemplars[0], batch.images[2])
    assert torch.equal(condition.exemplar_label_maps[1], batch.label_maps[0])


def test_generate_from_exemplars_and_from_plain_label_maps():
    family = sean32()
    family.nets.eval()
    condition = family.condition_of(ImageBatch(images(4), None, None, layouts(4)))
    assert family.generate(4, condition).shape == (4, 3, 32, 32)
    plain = family.generate(4, layouts(4))
    assert plain.shape == (4, 3, 32, 32) and plain.min() >= -1 and plain.max() <= 1
    with pytest.raises(DataError, match="3 conditions for 4"):
        family.generate(4, condition[:3])
    with pytest.raises(DataError, match="label maps"):
        family.generate(4, None)


def test_transfer_styles_mixes_reference_and_base_styles():
    family = sean32()
    family.nets.eval()
    generator = family.nets["G"]
    base_maps, base = layouts(2, seed=3), images(2, seed=4)
    reference_maps, reference = layouts(2, seed=5), images(2, seed=6)
    target, reference_planes = one_hot_maps(base_maps, 5), one_hot_maps(reference_maps, 5)
    with torch.no_grad():
        own = generator(target, base, target)
        base_styles, _ = generator.encode_styles(base, target)
        reference_styles, reference_present = generator.encode_styles(reference, reference_planes)
        mixed_styles = base_styles.clone()
        take = reference_present[:, 2]
        mixed_styles[take, 2] = reference_styles[take, 2]
        only_class_2 = generator.synthesize(target, mixed_styles)
    # no region from the reference: the base image's own reconstruction
    assert torch.equal(family.transfer_styles(base_maps, reference, reference_maps, [], base), own)
    # class 2 from the reference (where the reference has it), the rest from the base
    assert torch.equal(family.transfer_styles(base_maps, reference, reference_maps, [2], base), only_class_2)
    # every class: the reference's styles, the base's only where the reference lacks a class
    everything = torch.where(reference_present.unsqueeze(2), reference_styles, base_styles)
    torch.testing.assert_close(family.transfer_styles(base_maps, reference, reference_maps, list(range(5)), base),
                               generator.synthesize(target, everything))
    # one reference serves every layout
    one = family.transfer_styles(base_maps, reference[:1], reference_maps[:1], [1, 3])
    expanded = family.transfer_styles(base_maps, reference[:1].expand(2, -1, -1, -1),
                                      reference_maps[:1].expand(2, -1, -1), [1, 3])
    assert one.shape == (2, 3, 32, 32) and torch.equal(one, expanded)
    with pytest.raises(DataError, match=r"regions \[7\]"):
        family.transfer_styles(base_maps, reference, reference_maps, [7])


def test_discriminator_too_deep_for_the_image_is_refused():
    with pytest.raises(ConfigError, match="d_layers"):
        build_family("sean", DataSpec(channels=3, image_size=16, map_classes=4), {"d_layers": 2})


# --- export ---------------------------------------------------------------------------------------


def test_export_takes_layout_exemplar_and_exemplar_layout_planes():
    family = sean32()
    family.nets.eval()
    exported = family.export_generator()
    assert exported.condition_kind == "exemplar" and exported.condition_shape == (13, 32, 32)
    example = exported.example_inputs(4)
    assert example.shape == (4, 13, 32, 32)
    assert torch.equal(example[:, :5].sum(1), torch.ones(4, 32, 32))  # one-hot target layout
    assert torch.equal(example[:, 8:].sum(1), torch.ones(4, 32, 32))  # one-hot exemplar layout
    assert example[:, 5:8].abs().max() <= 1
    with torch.no_grad():
        out = exported(example)
        assert torch.equal(exported(example), out)  # no noise: deterministic
        expected = family.nets["G"](example[:, :5], example[:, 5:8], example[:, 8:], noise=False)
    torch.testing.assert_close(out, expected)


def test_export_survives_torch_export_with_any_batch_size():
    family = sean32()
    family.nets.eval()
    exported = family.export_generator()
    example = exported.example_inputs(4)
    program = torch.export.export(exported, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            assert torch.allclose(program.module()(inputs), exported(inputs), atol=1e-5)


def test_export_inputs_of_an_exemplar_condition():
    family = sean32()
    exported = family.export_generator()
    condition = family.condition_of(ImageBatch(images(2), None, None, layouts(2)))
    tensor = exported.inputs(condition.label_maps, condition.exemplars, condition.exemplar_label_maps)
    assert torch.equal(tensor[:, :5].argmax(1), condition.label_maps)
    assert torch.equal(tensor[:, 5:8], condition.exemplars)
    assert torch.equal(tensor[:, 8:].argmax(1), condition.exemplar_label_maps)
