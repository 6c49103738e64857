"""BEGAN: the convergence measure M_global and the k_t controller against hand values, through the family."""

import pytest
import torch
from torch import nn

from components.families import DataSpec, ImageBatch, build_family, get_family

from .test_losses_families_i_a import ConstantGenerator

SPEC = DataSpec(channels=1, image_size=8)


class HalfReconstruction(nn.Module):
    """An auto-encoder stub that reconstructs v as v / 2, so L(v) = mean |v| / 2; holds k_t like BEGAN's D."""

    def __init__(self, k):
        super().__init__()
        self.register_buffer("k_t", torch.tensor(k))

    def forward(self, x):
        return x / 2


def real_images():
    """Two images, all 0.4 and all -0.8: per-image errors 0.2 and 0.4 under the stub, so L(x) = 0.3."""
    return ImageBatch(torch.cat([torch.full((1, 1, 8, 8), 0.4), torch.full((1, 1, 8, 8), -0.8)]))


@pytest.mark.parametrize("fake, expected_m, expected_k", [
    # L(G(z)) = 0.1: gamma L(x) - L(G(z)) = 0.15 - 0.1 = 0.05; M = 0.3 + 0.05; k = 0.5 + 0.1 * 0.05
    (0.2, 0.35, 0.505),
    # L(G(z)) = 0.4: 0.15 - 0.4 = -0.25, whose absolute value M adds; k = 0.5 - 0.1 * 0.25
    (0.8, 0.55, 0.475),
])
def test_convergence_m_and_k_update_hand_values(fake, expected_m, expected_k):
    family = build_family("began", SPEC, {"gamma": 0.5, "lambda_k": 0.1})
    d = HalfReconstruction(0.5)
    loss, logs = family.discriminator_loss(real_images(), {"G": ConstantGenerator(fake), "D": d})
    assert logs["l_real"] == pytest.approx(0.3, rel=1e-6)
    assert logs["l_fake"] == pytest.approx(fake / 2, rel=1e-6)
    assert logs["convergence_m"] == pytest.approx(expected_m, rel=1e-6)
    assert loss.item() == pytest.approx(0.3 - 0.5 * fake / 2, rel=1e-6)  # L_D with the k_t before the update
    assert logs["k_t"] == pytest.approx(0.5)
    assert d.k_t.item() == pytest.approx(expected_k, rel=1e-6)  # k_{t+1}, for the next iteration


def test_convergence_m_is_logged_every_iteration_by_a_real_tiny_began():
    torch.manual_seed(0)
    family = build_family("began", SPEC, get_family("began").tiny)
    d_phase = next(phase for phase in family.phases() if "D" in phase.modules)
    assert (d_phase.every, d_phase.repeats) == (1, 1)  # the phase that logs M runs on every iteration
    batch = ImageBatch(torch.rand(4, 1, 8, 8) * 2 - 1)
    nets = dict(family.nets.items())
    for _ in range(3):
        _, logs = d_phase.loss(batch, nets)
        gamma = family.config.gamma
        assert logs["convergence_m"] == pytest.approx(logs["l_real"] + abs(gamma * logs["l_real"] - logs["l_fake"]),
                                                      rel=1e-5)
