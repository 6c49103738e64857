"""Adversarial losses and penalties as pure functions of logits and networks.

Discriminator outputs are raw logits (no sigmoid): ``softplus`` forms of the
BCE objectives are the numerically stable spelling of ``log D`` and
``log(1 - D)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def bce_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-E[log D(x)] - E[log(1 - D(G(z)))]: D maximises the GAN value function."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def bce_discriminator_loss_with_logs(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The BCE discriminator loss plus what is worth watching: the loss and D's mean belief on each side."""
    loss = bce_discriminator_loss(real_logits, fake_logits)
    return loss, {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                  "d_fake": torch.sigmoid(fake_logits).mean().item()}


def minimax_generator_loss(fake_logits: Tensor) -> Tensor:
    """E[log(1 - D(G(z)))], the generator's side of the original minimax game.

    It saturates when D rejects samples confidently, which is why the paper
    proposes the non-saturating loss below for training.
    """
    return -F.softplus(fake_logits).mean()


def nonsaturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E[log D(G(z))]: same fixed point as the minimax loss, strong early gradients."""
    return F.softplus(-fake_logits).mean()


def wasserstein_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E[C(G(z))] - E[C(x)]; its negation estimates the Wasserstein-1 distance."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: Tensor) -> Tensor:
    """-E[C(G(z))]."""
    return -fake_scores.mean()


def interpolate(real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    """Points on straight lines between real and fake samples; alpha has one value per sample."""
    alpha = alpha.view(-1, *([1] * (real.dim() - 1)))
    return alpha * real + (1 - alpha) * fake


def gradient_penalty(critic: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    """E[(||grad_x C(x)||_2 - 1)^2] at ``points`` (WGAN-GP, Gulrajani et al. 2017).

    ``create_graph`` keeps the penalty differentiable so the critic is trained on it.
    """
    points = points.detach().requires_grad_(True)
    scores = critic(points)
    (grads,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    norms = grads.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()
