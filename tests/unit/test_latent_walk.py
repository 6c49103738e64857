"""Latent walks (straight and spherical) and DCGAN's vector arithmetic, against hand values."""

import math

import pytest
import torch

from components.errors import GanzooError
from components.families import DataSpec, build_family, get_family
from components.training.latent_walk import latent_walk, lerp, slerp, vector_arithmetic, walk_images, walk_inputs


def test_lerp_hand_values():
    walk = lerp(torch.tensor([[0.0, 2.0]]), torch.tensor([[4.0, -2.0]]), torch.tensor([0.0, 0.25, 1.0]))
    assert walk.tolist() == [[[0.0, 2.0], [1.0, 1.0], [4.0, -2.0]]]


def test_slerp_stays_on_the_circle_and_splits_the_angle():
    start, end = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    walk = slerp(start, end, torch.tensor([0.0, 0.5, 1.0]))[0]
    assert walk[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert walk[1].tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)], abs=1e-6)  # 45 degrees, norm 1
    assert walk[2].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_slerp_interpolates_norms_and_handles_parallel_pairs():
    start, end = torch.tensor([[2.0, 0.0]]), torch.tensor([[4.0, 0.0]])  # parallel: angle 0
    walk = slerp(start, end, torch.tensor([0.0, 0.5, 1.0]))[0]
    assert walk.flatten().tolist() == pytest.approx([2.0, 0.0, 3.0, 0.0, 4.0, 0.0], abs=1e-6)


def test_latent_walk_is_row_major_and_walks_only_the_spherical_columns_on_the_sphere():
    start = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    end = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    flat = latent_walk(start, end, 3, spherical=True, spherical_columns=2)
    assert flat.shape == (6, 3)
    assert flat[1, :2].norm().item() == pytest.approx(1.0)  # on the circle, not the chord's midpoint
    assert flat[:3, 2].tolist() == [1.0, 1.0, 1.0]  # the condition column stays as it is
    assert flat[3].tolist() == pytest.approx([0.0, 1.0, 0.0]) and flat[5].tolist() == pytest.approx([1.0, 0.0, 0.0])
    with pytest.raises(GanzooError, match="at least 2"):
        latent_walk(start, end, 1)


def test_vector_arithmetic_is_mean_a_minus_mean_b_plus_mean_c():
    a = torch.tensor([[1.0, 1.0], [3.0, 1.0]])  # mean (2, 1)
    b = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[0.0, 2.0], [0.0, 4.0], [0.0, 0.0]])  # mean (0, 2)
    assert vector_arithmetic(a, b, c).tolist() == [1.0, 3.0]
    with pytest.raises(GanzooError, match="latent sizes differ"):
        vector_arithmetic(a, b, torch.zeros(1, 3))


def test_walk_of_a_class_conditional_family_keeps_each_row_on_its_class():
    torch.manual_seed(0)
    family = build_family("acgan", DataSpec(1, 8, 3), get_family("acgan").tiny)
    exported, inputs = walk_inputs(family, rows=3, steps=4)
    one_hot = inputs[:, exported.latent_dim:].view(3, 4, 3)
    assert torch.equal(one_hot, one_hot[:, :1].expand(-1, 4, -1))  # constant along each walk
    assert one_hot[:, 0].argmax(1).tolist() == [0, 1, 2]


def test_walk_images_and_refusals():
    torch.manual_seed(0)
    dcgan = build_family("dcgan", DataSpec(1, 8), get_family("dcgan").tiny)
    images = walk_images(dcgan, rows=2, steps=5, seed=1)
    assert images.shape == (10, 1, 8, 8)
    with pytest.raises(GanzooError, match="only text-conditional families take a caption"):
        walk_images(dcgan, rows=1, steps=2, text="a thin two")
    t2i = build_family("gan_t2i", DataSpec(1, 8, 3), get_family("gan_t2i").tiny)
    assert walk_images(t2i, rows=2, steps=3, text="a thin two").shape == (6, 1, 8, 8)
