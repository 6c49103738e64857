"""Each loss against a value computed by hand on a tiny tensor."""

import math

import pytest
import torch

from components import losses

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_bce_discriminator_loss_at_chance_is_two_log_two():
    assert losses.bce_discriminator_loss(t(0.0), t(0.0)).item() == pytest.approx(2 * math.log(2))


def test_bce_discriminator_loss_hand_value():
    # D(x) = 0.75 on the real sample, D(G(z)) = 0.25 on the fake: -log .75 - log(1 - .25)
    value = losses.bce_discriminator_loss(t(LN3), t(-LN3)).item()
    assert value == pytest.approx(-2 * math.log(0.75))


def test_nonsaturating_generator_loss_is_minus_log_d():
    assert losses.nonsaturating_generator_loss(t(LN3, LN3)).item() == pytest.approx(-math.log(0.75))


def test_minimax_generator_loss_is_log_one_minus_d():
    assert losses.minimax_generator_loss(t(LN3)).item() == pytest.approx(math.log(0.25))


def test_wasserstein_losses():
    real, fake = t(1.0, 3.0), t(0.5, -0.5)
    assert losses.wasserstein_critic_loss(real, fake).item() == pytest.approx(0.0 - 2.0)
    assert losses.wasserstein_generator_loss(t(0.5, 1.5)).item() == pytest.approx(-1.0)


def test_interpolate_per_sample_alpha():
    real = t(2.0, 4.0).view(2, 1, 1, 1)
    fake = t(0.0, 0.0).view(2, 1, 1, 1)
    mixed = losses.interpolate(real, fake, t(0.25, 0.5))
    assert mixed.flatten().tolist() == pytest.approx([0.5, 2.0])


def test_gradient_penalty_of_linear_critic():
    # C(x) = 3 x1 + 4 x2 has gradient norm 5 everywhere: (5 - 1)^2 = 16
    weight = t(3.0, 4.0)
    points = t(1.0, 2.0, -1.0, 0.5).view(2, 2)
    assert losses.gradient_penalty(lambda x: x @ weight, points).item() == pytest.approx(16.0)


def test_gradient_penalty_of_quadratic_critic_per_sample():
    # C(x) = |x|^2 / 2 has gradient x: norms 1 and 5 give (0 + 16) / 2
    points = t(0.6, 0.8, 3.0, 4.0).view(2, 2)
    penalty = losses.gradient_penalty(lambda x: 0.5 * (x ** 2).sum(dim=1), points)
    assert penalty.item() == pytest.approx(8.0)


def test_gradient_penalty_is_differentiable_in_critic_weights():
    weight = torch.tensor([3.0, 4.0], requires_grad=True)
    penalty = losses.gradient_penalty(lambda x: x @ weight, torch.ones(1, 2))
    penalty.backward()
    # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w| = 2 * 4 * w / 5
    assert weight.grad.tolist() == pytest.approx([4.8, 6.4])
