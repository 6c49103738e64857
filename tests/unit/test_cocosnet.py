"""CoCosNet: correspondence, warping, cycle and contextual losses against hand values; networks' shapes; the family."""

import math
import warnings

import pytest
import torch
from torch import nn

from components.errors import DataError
from components.families import DataSpec, ExemplarCondition, ImageBatch, build_family, one_hot_maps
from components.families.cocosnet import (CoCosNetGenerator, PositionalNorm, contextual_loss,
                                          correspondence_regularisation_loss, correspondence_softmax, cycle_warp,
                                          domain_alignment_loss, pixel_patches, pseudo_exemplars,
                                          random_affine_grids, warp)
from components.training.loop import run_phase

# two zero-mean, orthogonal unit vectors of R^3: channel-wise centring leaves them as they are
U = torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2)
V = torch.tensor([1.0, 1.0, -2.0]) / math.sqrt(6)


def feature_map(*vectors):
    """1 x D x 1 x P: one position per vector."""
    return torch.stack(vectors, dim=1).view(1, -1, 1, len(vectors))


def tiny(image_size=16, map_classes=4, channels=3, **overrides):
    torch.manual_seed(0)
    spec = DataSpec(channels=channels, image_size=image_size, map_classes=map_classes)
    small = {"adaptor_width": 4, "feature_dim": 8, "g_width": 4, "g_hidden": 4, "d_width": 4}
    return build_family("cocosnet", spec, small | overrides)


def segmentation_batch(family, n=4):
    spec = family.spec
    return ImageBatch(torch.rand(n, spec.channels, spec.image_size, spec.image_size) * 2 - 1,
                      label_maps=torch.randint(spec.map_classes, (n, spec.image_size, spec.image_size)))


# --- correspondence -------------------------------------------------------------------------------


def test_correspondence_softmax_hand_values_for_cosines_one_and_zero():
    # M = [[cos(u, u), cos(u, v)], [cos(v, u), cos(v, v)]] = [[1, 0], [0, 1]]; t = 2:
    # each row softmax(2, 0) = (e^2 / (e^2 + 1), 1 / (e^2 + 1)) = (0.880797, 0.119203)
    attention = correspondence_softmax(feature_map(U, V), feature_map(U, V), temperature=2.0)
    high, low = math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)
    torch.testing.assert_close(attention, torch.tensor([[[high, low], [low, high]]]))


def test_correspondence_softmax_hand_values_for_cosines_one_minus_one_and_zero():
    # b = (u, -u): row u has cosines (1, -1) -> (e^2, e^-2) / (e^2 + e^-2) = (0.982014, 0.017986);
    # row v has cosines (0, 0) -> (1/2, 1/2)
    attention = correspondence_softmax(feature_map(U, V), feature_map(U, -U), temperature=2.0)
    high = math.exp(2) / (math.exp(2) + math.exp(-2))
    torch.testing.assert_close(attention, torch.tensor([[[high, 1 - high], [0.5, 0.5]]]))


def test_correspondence_softmax_ignores_each_position_scale_and_channel_offset():
    # 3u + 5 and 0.5v - 1: centring removes the offset (added to every channel), normalising the scale
    moved = feature_map(3 * U + 5, 0.5 * V - 1)
    torch.testing.assert_close(correspondence_softmax(moved, feature_map(U, V), 2.0),
                               correspondence_softmax(feature_map(U, V), feature_map(U, V), 2.0))


def test_correspondence_softmax_rows_sum_to_one():
    torch.manual_seed(0)
    attention = correspondence_softmax(torch.randn(3, 8, 4, 4), torch.randn(3, 8, 4, 4), temperature=100.0)
    assert attention.shape == (3, 16, 16)
    torch.testing.assert_close(attention.sum(dim=2), torch.ones(3, 16))


# --- warping and cycle warping --------------------------------------------------------------------


def test_warping_with_one_hot_attention_copies_the_exemplar_pixel():
    # values 1 x 2 x 1 x 2: pixel 0 = (1, 10), pixel 1 = (2, 20); position 0 attends to pixel 1 and back
    values = torch.tensor([[1.0, 2.0], [10.0, 20.0]]).view(1, 2, 1, 2)
    swapped = warp(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), values)
    torch.testing.assert_close(swapped, torch.tensor([[2.0, 1.0], [20.0, 10.0]]).view(1, 2, 1, 2))


def test_warping_with_soft_attention_is_the_weighted_mean():
    # position 0: 0.25 * 1 + 0.75 * 2 = 1.75; position 1: 0.5 * 1 + 0.5 * 2 = 1.5
    values = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    warped = warp(torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]), values)
    torch.testing.assert_close(warped, torch.tensor([1.75, 1.5]).view(1, 1, 1, 2))


def test_cycle_warping_with_identity_attention_gives_zero_regularisation():
    values = torch.randn(2, 3, 2, 2)
    identity = torch.eye(4).expand(2, 4, 4)
    torch.testing.assert_close(cycle_warp(identity, identity, values), values)
    assert correspondence_regularisation_loss(identity, identity, values).item() == 0.0


def test_cycle_warping_through_uniform_attention_hand_value():
    # y = (1, 3): uniform attention maps both positions to the mean 2 and back to (2, 2); L1 = (1 + 1) / 2 = 1
    values = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    uniform = torch.full((1, 2, 2), 0.5)
    assert correspondence_regularisation_loss(uniform, uniform, values).item() == pytest.approx(1.0)


# --- contextual loss ------------------------------------------------------------------------------


def test_contextual_loss_hand_value_on_two_against_two_features():
    # x = (e2, (1/2, sqrt(3)/2)), y = (e1, -e1); y's mean is 0, so centring changes nothing.
    # x1: cosine distances (1, 1) -> d~ equal -> A = (1/2, 1/2), max 1/2.
    # x2: distances (1/2, 3/2) -> d~ = (1, 3) (eps aside) -> A = softmax((0, -2) / h), h = 1/2:
    #     max = 1 / (1 + e^-4) = 0.982014.
    # CX = (0.5 + 0.982014) / 2 = 0.741007, loss = -ln 0.741007 = 0.299746
    x = feature_map(torch.tensor([0.0, 1.0]), torch.tensor([0.5, math.sqrt(3) / 2]))
    y = feature_map(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]))
    expected = -math.log((0.5 + 1 / (1 + math.exp(-4))) / 2)
    assert contextual_loss(x, y, h=0.5).item() == pytest.approx(expected, abs=1e-4)


def test_contextual_loss_of_identical_sets_is_its_minimum_zero_even_shuffled():
    # each x_i finds itself: d_ii = 0, every other d~_ij is d_ij / eps, so A_ii = 1, CX = 1, -log 1 = 0
    torch.manual_seed(0)
    features = torch.randn(2, 6, 3, 3)
    shuffled = features.flatten(2)[:, :, torch.randperm(9)].view(2, 6, 3, 3)
    assert contextual_loss(features, features).item() == pytest.approx(0.0, abs=1e-5)
    # a set measure: the positions' order does not matter, which lets a misaligned exemplar be the target
    assert contextual_loss(shuffled, features).item() == pytest.approx(0.0, abs=1e-5)


def test_contextual_loss_is_larger_for_different_features_and_differentiable():
    torch.manual_seed(0)
    target = torch.randn(2, 6, 3, 3)
    other = torch.randn(2, 6, 3, 3, requires_grad=True)
    value = contextual_loss(other, target)
    value.backward()
    assert value.item() > 0.1 and torch.isfinite(other.grad).all()
    assert contextual_loss(target + 0.3 * other.detach(), target) < value  # closer features, smaller loss


# --- domain alignment, features, augmentation -----------------------------------------------------


def test_domain_alignment_loss_hand_value():
    # position 0: (3, 4) -> (0.6, 0.8) against (1, 0): |0.6 - 1| + |0.8 - 0| = 1.2
    # position 1: (0, 2) -> (0, 1) against (0, 5) -> (0, 1): 0.  Mean of the 4 entries: 1.2 / 4 = 0.3
    layout = feature_map(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0]))
    image = feature_map(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0]))
    assert domain_alignment_loss(layout, image).item() == pytest.approx(0.3)


def test_pixel_patches_hold_each_neighbourhood_centre_last_in_its_place():
    images = torch.arange(2 * 16, dtype=torch.float32).view(1, 2, 4, 4)
    patches = pixel_patches(images)
    assert patches.shape == (1, 18, 4, 4)
    torch.testing.assert_close(patches[:, 4], images[:, 0])  # centre of channel 0's 3 x 3 patch
    torch.testing.assert_close(patches[:, 9 + 4], images[:, 1])
    assert patches[0, 0, 1, 1] == images[0, 0, 0, 0]  # top-left neighbour


def test_positional_norm_standardises_each_pixel_across_channels():
    torch.manual_seed(0)
    normed = PositionalNorm()(torch.randn(2, 8, 3, 3) * 4 + 2)
    torch.testing.assert_close(normed.mean(dim=1), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.pow(2).mean(dim=1), torch.ones(2, 3, 3), atol=1e-3, rtol=0)


def test_identity_transform_leaves_pseudo_exemplars_unchanged():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    planes = one_hot_maps(torch.randint(4, (3, 8, 8)), 4)
    grids = random_affine_grids(3, 8, 0.0, 0.0, 0.0, flip=False, device=torch.device("cpu"))
    moved, moved_planes = pseudo_exemplars(images, planes, grids)
    torch.testing.assert_close(moved, images)
    torch.testing.assert_close(moved_planes, planes)


def test_random_transforms_keep_layouts_one_hot_and_flip_some_rows():
    torch.manual_seed(3)
    images = torch.rand(16, 1, 8, 8)
    planes = one_hot_maps(torch.randint(4, (16, 8, 8)), 4)
    _, moved_planes = pseudo_exemplars(images, planes, random_affine_grids(16, 8, 0.1, 15.0, 0.1, True,
                                                                           torch.device("cpu")))
    torch.testing.assert_close(moved_planes.sum(dim=1), torch.ones(16, 8, 8))
    assert set(moved_planes.unique().tolist()) == {0.0, 1.0}
    flipped, _ = pseudo_exemplars(images, planes, random_affine_grids(16, 8, 0.0, 0.0, 0.0, True,
                                                                      torch.device("cpu")))
    is_flipped = [torch.allclose(f, i.flip(-1)) for f, i in zip(flipped, images)]
    is_same = [torch.allclose(f, i) for f, i in zip(flipped, images)]
    assert all(a or b for a, b in zip(is_flipped, is_same)) and any(is_flipped) and any(is_same)


# --- networks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [16, 32, 64])
def test_generator_shapes(image_size):
    family = tiny(image_size=image_size, map_classes=5)
    family.nets.eval()  # spectral norms' power iteration would change G between the two calls below
    n, grid = 3, image_size // 4
    layout = one_hot_maps(torch.randint(5, (n, image_size, image_size)), 5)
    exemplars = torch.rand(n, 3, image_size, image_size) * 2 - 1
    out = family.nets["G"](layout, exemplars, targets=exemplars)
    assert out["images"].shape == (n, 3, image_size, image_size)
    assert out["images"].abs().max() <= 1
    assert out["warped"].shape == out["exemplar_grid"].shape == (n, 3, grid, grid)
    for key in ("layout_to_exemplar", "exemplar_to_layout"):
        assert out[key].shape == (n, grid * grid, grid * grid)
        torch.testing.assert_close(out[key].sum(dim=2), torch.ones(n, grid * grid))
    assert out["layout_domain"].shape == out["target_domain"].shape == (n, 8, grid, grid)
    torch.testing.assert_close(family.nets["G"](layout, exemplars), out["images"])


def test_default_networks_at_32_px():
    torch.manual_seed(0)
    family = build_family("cocosnet", DataSpec(channels=3, image_size=32, map_classes=5))
    layout = one_hot_maps(torch.randint(5, (2, 32, 32)), 5)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = family.nets["G"](layout, images, targets=images)
    assert out["images"].shape == (2, 3, 32, 32) and out["layout_to_exemplar"].shape == (2, 64, 64)
    per_scale = family.discriminate(family.nets, layout, images)
    assert [scale[-1].shape for scale in per_scale] == [(2, 1, 14, 14), (2, 1, 6, 6)]
    layers = family.feature_layers(images, layout, family.nets)
    assert [tuple(x.shape) for x in layers] == [(2, 27, 16, 16), (2, 16, 16, 16), (2, 32, 15, 15)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in family.nets["G"].modules())  # PONO throughout


def test_generator_is_one_module_with_both_adaptors_and_the_translator():
    family = tiny()
    assert set(family.nets) == {"G", "D"} and isinstance(family.nets["G"], CoCosNetGenerator)
    optimizers = family.build_optimizers()
    assert optimizers["G"].param_groups[0]["lr"] == 1e-4 and optimizers["D"].param_groups[0]["lr"] == 4e-4
    assert optimizers["G"].param_groups[0]["betas"] == (0.0, 0.999)


# --- the family -----------------------------------------------------------------------------------


def test_condition_pairs_each_layout_with_the_next_rows_image():
    family = tiny()
    batch = segmentation_batch(family)
    condition = family.condition_of(batch)
    assert torch.equal(condition.label_maps, batch.label_maps)
    assert torch.equal(condition.exemplars[1], batch.images[0])
    assert torch.equal(condition.exemplar_label_maps[0], batch.label_maps[-1])


def test_training_exemplars_are_own_transformed_images_or_the_next_rows():
    batch = segmentation_batch(tiny())
    planes = one_hot_maps(batch.label_maps, 4)
    others = tiny(self_reference_probability=0.0).training_exemplars(batch.images, planes)
    assert torch.equal(others[0], torch.roll(batch.images, 1, 0)) and torch.equal(others[1], torch.roll(planes, 1, 0))
    still = tiny(self_reference_probability=1.0, exemplar_shift=0.0, exemplar_rotation=0.0, exemplar_scale=0.0,
                 exemplar_flip=False)
    own = still.training_exemplars(batch.images, planes)
    torch.testing.assert_close(own[0], batch.images)
    torch.testing.assert_close(own[1], planes)


def test_d_phase_judges_the_g_phases_images_of_the_same_batch():
    family = tiny()
    nets, optimizers = dict(family.nets.items()), family.build_optimizers()
    phases = family.phases()
    assert [(p.name, p.modules, p.uses_data) for p in phases] == [("G", ("G",), True), ("D", ("D",), False)]
    calls = []
    family.nets["G"].register_forward_hook(lambda *args: calls.append(1))
    batch = segmentation_batch(family)
    g_logs = run_phase(phases[0], batch, nets, optimizers)
    d_logs = run_phase(phases[1], batch, nets, optimizers)
    assert len(calls) == 1  # D reused G's images
    run_phase(phases[1], segmentation_batch(family), nets, optimizers)
    assert len(calls) == 2  # another batch: D makes its own
    assert {"g_loss", "g_adv", "g_fm", "g_perceptual", "g_contextual", "g_alignment", "g_cycle",
            "warp_l1"} <= set(g_logs)
    assert {"d_loss", "d_real", "d_fake"} <= set(d_logs)
    assert all(math.isfinite(v) for v in {**g_logs, **d_logs}.values())


def test_generate_needs_an_exemplar_condition_of_n_rows():
    family = tiny()
    family.nets.eval()
    batch = segmentation_batch(family)
    with pytest.raises(DataError, match="ExemplarCondition"):
        family.generate(4, batch.label_maps)
    with pytest.raises(DataError, match="3 layouts for 4"):
        family.generate(4, family.condition_of(batch)[:3])
    images = family.generate(4, family.condition_of(batch))
    assert images.shape == (4, 3, 16, 16)


def test_the_exemplar_changes_the_output():
    family = tiny()
    family.nets.eval()
    batch = segmentation_batch(family)
    condition = family.condition_of(batch)
    other = ExemplarCondition(condition.label_maps, -condition.exemplars, condition.exemplar_label_maps)
    assert not torch.allclose(family.generate(4, condition), family.generate(4, other))


def test_export_takes_layout_and_exemplar_in_one_tensor_and_traces_with_any_batch_size():
    family = tiny(channels=1, map_classes=5)
    family.nets.eval()
    exported = family.export_generator().eval()
    example = exported.example_inputs(4)
    assert example.shape == (4, 6, 16, 16)
    torch.testing.assert_close(example[:, :5].sum(dim=1), torch.ones(4, 16, 16))
    assert example[:, 5:].min() >= -1 and example[:, 5:].max() <= 1
    batch = segmentation_batch(family)
    condition = family.condition_of(batch)
    with torch.no_grad():
        expected = family.nets["G"](example[:, :5], example[:, 5:])
        torch.testing.assert_close(exported(example), expected)
        # the export folds each spectral norm into its weight (W / sigma once), which rounds differently from
        # dividing at every forward: about 1e-5 apart, more or less depending on the CPU's kernels
        torch.testing.assert_close(exported(exported.inputs(condition.label_maps, condition.exemplars)),
                                   family.generate(4, condition), rtol=1e-4, atol=1e-4)
    assert not any(hasattr(m, "weight_orig") for m in exported.modules())  # spectral norms folded in
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no attribute assigned while tracing
        program = torch.export.export(exported, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    for n in (2, 5):
        inputs = exported.example_inputs(n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(inputs), exported(inputs), atol=1e-5, rtol=1e-4)
