"""OASIS: the class-balanced N + 1 losses and LabelMix against hand values, and the networks' shapes."""

import math

import pytest
import torch
from torch import nn

from components.errors import DataError
from components.families import DataSpec, ImageBatch, build_family, one_hot_maps
from components.families.oasis import (OASISGenerator, SegmentationDiscriminator, balanced_real_loss,
                                       class_balanced_weights, class_mask, fake_class_loss, labelmix,
                                       labelmix_consistency_loss, labelmix_mask, oasis_generator_loss)
from components.training.loop import run_phase

LN2 = math.log(2.0)
# 1 x 2 x 2, two classes: three pixels of class 0, one of class 1
MAP = torch.tensor([[[0, 0], [0, 1]]])


def tiny(image_size=16, map_classes=4):
    torch.manual_seed(0)
    spec = DataSpec(channels=3, image_size=image_size, map_classes=map_classes)
    return build_family("oasis", spec, {"z_dim": 4, "g_width": 4, "spade_hidden": 4, "d_width": 4})


def logits_everywhere(values, height=2, width=2):
    """1 x len(values) x H x W logits, the same vector at every pixel."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).expand(1, -1, height, width).contiguous()


# --- class-balanced N + 1 cross-entropy -------------------------------------------------------------


def test_class_balanced_weights_hand_values():
    # 4 pixels, 2 classes present: w_0 = 4 / (2 * 3) = 2/3, w_1 = 4 / (2 * 1) = 2
    torch.testing.assert_close(class_balanced_weights(MAP, 2), torch.tensor([2 / 3, 2.0]))


def test_class_balanced_weights_skip_absent_classes_and_average_one_per_pixel():
    # class 2 has no pixel: weight 0, and the present classes keep their weights (2 present, not 3)
    weights = class_balanced_weights(MAP, 3)
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 2.0, 0.0]))
    # mean pixel weight: (3 * 2/3 + 1 * 2) / 4 = 1
    assert weights[MAP].mean().item() == pytest.approx(1.0)


def test_class_balanced_weights_are_one_on_a_balanced_batch():
    balanced = torch.tensor([[[0, 1], [2, 3]], [[3, 2], [1, 0]]])
    torch.testing.assert_close(class_balanced_weights(balanced, 4), torch.ones(4))


def test_real_loss_of_uniform_logits_is_log_of_n_plus_one():
    # softmax of zeros over K + 1 = 3 classes is 1/3 everywhere: CE = ln 3 per pixel; the weights average 1
    assert balanced_real_loss(torch.zeros(1, 3, 2, 2), MAP).item() == pytest.approx(math.log(3))


def test_real_loss_weights_each_pixel_by_its_class():
    # logits (ln 2, 0, 0): softmax (1/2, 1/4, 1/4). Class-0 pixels: -ln(1/2) = ln 2, weight 2/3;
    # the class-1 pixel: -ln(1/4) = 2 ln 2, weight 2. Mean: (3 * 2/3 * ln 2 + 2 * 2 ln 2) / 4 = 1.5 ln 2
    # (unweighted it would be (3 ln 2 + 2 ln 2) / 4 = 1.25 ln 2)
    logits = logits_everywhere([LN2, 0.0, 0.0])
    assert balanced_real_loss(logits, MAP).item() == pytest.approx(1.5 * LN2)
    assert oasis_generator_loss(logits, MAP).item() == pytest.approx(1.5 * LN2)


def test_fake_loss_targets_the_last_class_with_weight_one():
    # zeros: -ln(1/3) per pixel; (0, 0, ln 2): p(fake) = 2/4, -ln(1/2) = ln 2; (ln 2, 0, 0): p(fake) = 1/4, 2 ln 2
    assert fake_class_loss(torch.zeros(1, 3, 2, 2)).item() == pytest.approx(math.log(3))
    assert fake_class_loss(logits_everywhere([0.0, 0.0, LN2])).item() == pytest.approx(LN2)
    assert fake_class_loss(logits_everywhere([LN2, 0.0, 0.0])).item() == pytest.approx(2 * LN2)


# --- LabelMix --------------------------------------------------------------------------------------


def test_class_mask_hand_values():
    maps = torch.tensor([[[0, 1], [2, 1]], [[1, 1], [0, 2]]])
    real_classes = torch.tensor([[True, False, True], [False, True, False]])
    # image 0: classes 0 and 2 real; image 1: class 1 real
    expected = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    assert torch.equal(class_mask(maps, real_classes), expected)


def test_labelmix_mask_assigns_whole_classes():
    maps = torch.randint(4, (8, 16, 16), generator=torch.Generator().manual_seed(0))
    mask = labelmix_mask(maps, 4, torch.Generator().manual_seed(1))
    assert mask.shape == (8, 1, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    for i in range(8):
        for c in range(4):
            values = mask[i, 0][maps[i] == c]
            assert values.numel() > 0 and (values == values[0]).all(), (i, c)


def test_labelmix_takes_real_pixels_where_the_mask_is_one_and_fake_elsewhere():
    real = torch.arange(8.0).view(1, 2, 2, 2)
    fake = -torch.arange(1.0, 9.0).view(1, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    mixed = labelmix(real, fake, mask)
    # every channel follows the one mask
    expected = torch.tensor([[[[0.0, -2.0], [-3.0, 3.0]], [[4.0, -6.0], [-7.0, 7.0]]]])
    assert torch.equal(mixed, expected)


def test_labelmix_consistency_hand_value():
    # target = mask * 1 + (1 - mask) * 3 = [[1, 3], [3, 3]]; MSE against 0: (1 + 9 + 9 + 9) / 4 = 7
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    value = labelmix_consistency_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 3.0),
                                      mask)
    assert value.item() == pytest.approx(7.0)


def test_labelmix_consistency_is_zero_for_a_pixelwise_discriminator_only():
    # a 1x1 conv is affine per pixel: D(m x + (1 - m) y) = m D(x) + (1 - m) D(y) for m in {0, 1};
    # a 3x3 conv mixes neighbours across the mask's edges and is not consistent
    torch.manual_seed(0)
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    maps = torch.randint(3, (2, 8, 8))
    mask = labelmix_mask(maps, 3)
    for d, is_zero in ((nn.Conv2d(3, 4, 1), True), (nn.Conv2d(3, 4, 3, padding=1), False)):
        with torch.no_grad():
            value = labelmix_consistency_loss(d(labelmix(real, fake, mask)), d(real), d(fake), mask).item()
        assert (value < 1e-10) == is_zero, value


# --- networks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [16, 32, 64])
def test_discriminator_gives_n_plus_one_logits_per_pixel_at_full_resolution(image_size):
    d = SegmentationDiscriminator(3, 5, image_size, width=4)
    assert d(torch.randn(2, 3, image_size, image_size)).shape == (2, 6, image_size, image_size)


def test_generator_makes_images_of_the_map_size_and_uses_its_noise():
    torch.manual_seed(0)
    g = OASISGenerator(5, 8, 3, 32, width=4, hidden=4).eval()
    planes = one_hot_maps(torch.randint(5, (3, 32, 32)), 5)
    with torch.no_grad():
        first, second = g(planes, torch.randn(3, 8)), g(planes, torch.randn(3, 8))
    assert first.shape == (3, 3, 32, 32) and first.abs().max() <= 1
    assert not torch.allclose(first, second)


def test_family_networks_at_32_pixels():
    family = tiny(image_size=32, map_classes=5)
    maps = torch.randint(5, (2, 32, 32))
    family.nets.eval()
    images = family.generate(2, maps)
    assert images.shape == (2, 3, 32, 32)
    assert family.nets["D"](images).shape == (2, 6, 32, 32)


def test_phases_log_the_terms_and_keep_d_loss_their_sum():
    family = tiny()
    optimizers = family.build_optimizers()
    nets = dict(family.nets.items())
    batch = ImageBatch(torch.rand(4, 3, 16, 16) * 2 - 1, label_maps=torch.randint(4, (4, 16, 16)))
    d_phase, g_phase = family.phases()
    assert d_phase.modules == ("D",) and g_phase.modules == ("G",)
    logs = run_phase(d_phase, batch, nets, optimizers)
    assert logs["d_loss"] == pytest.approx(logs["d_real"] + logs["d_fake"] + 10 * logs["d_labelmix"], rel=1e-5)
    assert "g_adv" in run_phase(g_phase, batch, nets, optimizers)


def test_generate_samples_new_noise_and_export_is_deterministic_with_zero_noise():
    family = tiny()
    family.nets.eval()
    maps = torch.randint(4, (3, 16, 16))
    assert not torch.allclose(family.generate(3, maps), family.generate(3, maps))
    exported = family.export_generator().eval()
    planes = one_hot_maps(maps, 4)
    with torch.no_grad():
        once, again = exported(planes), exported(planes)
        torch.testing.assert_close(once, family.nets["G"](planes, torch.zeros(3, 4)), rtol=0, atol=0)
    torch.testing.assert_close(once, again, rtol=0, atol=0)
    assert exported.condition_shape == (4, 16, 16) and exported.condition_kind == "label_map"


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


def test_generate_needs_one_label_map_per_output():
    family = tiny()
    with pytest.raises(DataError, match="label maps for 4"):
        family.generate(4, torch.zeros(3, 16, 16, dtype=torch.long))
    with pytest.raises(DataError, match="label maps"):
        family.generate(4)
