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


# --- K+1 semi-supervised discriminator (Odena 2016; Salimans et al. 2016) -------------------------
# Logits have K + 1 columns: the K data classes, then "fake" last. p(fake | x) = softmax(logits)[K].


def k_plus_one_supervised_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """-E[log p(y | x)] over the K + 1 classes, on labelled real images; zero when there are none.

    The zero keeps the graph (``logits.sum() * 0``) so a batch with no labelled
    image still backpropagates through the same modules.
    """
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


def k_plus_one_real_loss(logits: Tensor) -> Tensor:
    """-E[log(1 - p(fake | x))]: a real image belongs to one of the K data classes, whichever it is.

    log(1 - p(fake | x)) = logsumexp(data logits) - logsumexp(all logits), stable for any logits.
    """
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, :-1], dim=1)).mean()


def k_plus_one_fake_loss(logits: Tensor) -> Tensor:
    """-E[log p(fake | G(z))]: a generated image belongs to the extra class K."""
    return (torch.logsumexp(logits, dim=1) - logits[:, -1]).mean()


def k_plus_one_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E[log(1 - p(fake | G(z)))]: the non-saturating generator loss of the K+1 game."""
    return k_plus_one_real_loss(fake_logits)


# --- BiGAN / ALI joint (x, z) discrimination (Donahue et al. 2017; Dumoulin et al. 2017) ----------


def bigan_encoder_generator_loss(encoder_pair_logits: Tensor, generator_pair_logits: Tensor) -> Tensor:
    """-E[log(1 - D(x, E(x)))] - E[log D(G(z), z)]: D's BCE with the labels inverted.

    E and G are trained together to make D call the encoder's pairs fake and the
    generator's pairs real (the papers' non-saturating form of the minimax game).
    """
    return F.softplus(encoder_pair_logits).mean() + F.softplus(-generator_pair_logits).mean()


# --- BEGAN (Berthelot et al. 2017), AC-GAN (Odena et al. 2017), InfoGAN (Chen et al. 2016) ---


def autoencoder_l1_energy(images: Tensor, reconstructions: Tensor) -> Tensor:
    """E[L(v)] with L(v) = |v - D(v)|: BEGAN's per-image L1 reconstruction error (pixel mean), batch mean."""
    return (images - reconstructions).abs().flatten(1).mean(1).mean()


def began_discriminator_loss(real_energy: Tensor, fake_energy: Tensor, k: Tensor | float) -> Tensor:
    """L_D = L(x) - k_t L(G(z)): reconstruct real images well, fakes badly, weighted by the equilibrium k_t."""
    return real_energy - k * fake_energy


def began_k_update(k: Tensor, real_energy: Tensor, fake_energy: Tensor, gamma: float, lambda_k: float) -> Tensor:
    """k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1): proportional control of E[L(G(z))] = gamma E[L(x)]."""
    return (k + lambda_k * (gamma * real_energy - fake_energy)).clamp(0.0, 1.0)


def began_convergence_measure(real_energy: Tensor, fake_energy: Tensor, gamma: float) -> Tensor:
    """M_global = L(x) + |gamma L(x) - L(G(z))|: falls as D reconstructs well and the equilibrium holds."""
    return real_energy + (gamma * real_energy - fake_energy).abs()


def auxiliary_class_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    """-L_C's term for one source: -E[log P(C = c | X)] (cross entropy of the auxiliary classifier)."""
    return F.cross_entropy(class_logits, labels)


def categorical_code_loss(code_logits: Tensor, codes: Tensor) -> Tensor:
    """-E[log Q(c|x)] for a categorical code given as class indices.

    The mutual-information lower bound is L_I = H(c) - this; H(c) is constant
    for a fixed prior, so minimising this maximises the bound.
    """
    return F.cross_entropy(code_logits, codes)


HALF_LOG_TWO_PI = 0.9189385332046727  # 0.5 * ln(2 pi), the Gaussian's normalising constant


def gaussian_code_loss(mean: Tensor, codes: Tensor, log_std: Tensor | float = 0.0) -> Tensor:
    """-E[log Q(c|x)] for continuous codes under a factored Gaussian Q(c|x) = N(mean, exp(log_std)^2).

    Summed over code dimensions, averaged over the batch; log_std = 0 is the
    fixed unit standard deviation.
    """
    log_std = torch.as_tensor(log_std, dtype=mean.dtype, device=mean.device)
    z = (codes - mean) * torch.exp(-log_std)
    nll = 0.5 * z.pow(2) + log_std + HALF_LOG_TWO_PI
    return nll.flatten(1).sum(1).mean()


# --- WGAN weight clipping (Arjovsky et al. 2017) -------------------------------------------------


@torch.no_grad()
def clip_weights_(module: torch.nn.Module, limit: float) -> None:
    """Clamp every parameter of ``module`` into [-limit, limit], in place.

    WGAN's crude way to keep the critic in a compact set of K-Lipschitz
    functions (Algorithm 1, line 7); buffers such as batch-norm statistics are
    not weights and stay as they are, as in the paper's code.
    """
    for parameter in module.parameters():
        parameter.clamp_(-limit, limit)


# --- Least-squares GAN (Mao et al. 2017), 0-1 coding a = 0, b = 1, c = 1 ---------------------------


def least_squares_discriminator_loss(real_scores: Tensor, fake_scores: Tensor,
                                     real_target: float = 1.0, fake_target: float = 0.0) -> Tensor:
    """1/2 E[(D(x) - b)^2] + 1/2 E[(D(G(z)) - a)^2] on raw scores (LSGAN eq. 2).

    Fakes on the right side of the boundary but far from the data are still
    penalised, which is what gives the generator gradients where BCE saturates.
    """
    return 0.5 * ((real_scores - real_target) ** 2).mean() + 0.5 * ((fake_scores - fake_target) ** 2).mean()


def least_squares_generator_loss(fake_scores: Tensor, target: float = 1.0) -> Tensor:
    """1/2 E[(D(G(z)) - c)^2]: G wants D to score its samples as c (LSGAN eq. 2)."""
    return 0.5 * ((fake_scores - target) ** 2).mean()


# --- Energy-based GAN (Zhao et al. 2017): D outputs energies, low on the data -------------------


def energy_margin_discriminator_loss(real_energy: Tensor, fake_energy: Tensor, margin: float) -> Tensor:
    """E[D(x)] + E[[m - D(G(z))]^+] (EBGAN eq. 1).

    The hinge stops pushing a fake's energy up once it exceeds the margin, so
    D is not rewarded for making fakes arbitrarily bad to reconstruct.
    """
    return real_energy.mean() + F.relu(margin - fake_energy).mean()


def pulling_away_term(codes: Tensor) -> Tensor:
    """1/(N(N-1)) sum_{i != j} cos(S_i, S_j)^2 over a batch of codes S (EBGAN eq. 4).

    Penalising squared cosine similarity between a batch's encoder codes
    pushes the generator away from mode collapse; the scale is invariant to
    the codes' norms. A batch of one has no pairs and gives zero.
    """
    n = codes.size(0)
    if n < 2:
        return codes.sum() * 0.0  # keeps the graph, so the caller can backpropagate through it
    unit = F.normalize(codes.flatten(1), dim=1)
    cosine = unit @ unit.t()
    off_diagonal = cosine.pow(2).sum() - cosine.diagonal().pow(2).sum()
    return off_diagonal / (n * (n - 1))


# --- GAN-CLS and GAN-INT (Reed et al. 2016): a matching-aware D and interpolated text ------------


def matching_aware_discriminator_loss(real_logits: Tensor, mismatched_logits: Tensor,
                                      fake_logits: Tensor) -> Tensor:
    """-(log D(x, h) + (log(1 - D(x, h_wrong)) + log(1 - D(G(z, h), h))) / 2) (GAN-CLS, Algorithm 1).

    A real image with a caption of another image is a third kind of input that
    D must reject, so D learns whether image and text match, not only whether
    the image is real; the two negatives share the weight of the one positive.
    """
    return F.softplus(-real_logits).mean() + 0.5 * (F.softplus(mismatched_logits).mean()
                                                     + F.softplus(fake_logits).mean())


def interpolate_text_embeddings(first: Tensor, second: Tensor, beta: float) -> Tensor:
    """beta * h1 + (1 - beta) * h2: GAN-INT's points between two captions' embeddings."""
    return beta * first + (1 - beta) * second


def gan_int_generator_loss(fake_logits: Tensor, interpolated_logits: Tensor,
                           interpolation_weight: float = 1.0) -> Tensor:
    """-E[log D(G(z, h), h)] - weight * E[log D(G(z, h_int), h_int)], non-saturating (GAN-INT).

    The interpolated embeddings have no real image, so only G is trained on
    them: D's judgement pulls G's images for points between captions onto the
    data manifold.
    """
    return F.softplus(-fake_logits).mean() + interpolation_weight * F.softplus(-interpolated_logits).mean()


# --- PGGAN (Karras et al. 2018) and StyleGAN (Karras et al. 2019) -------------------------------


def drift_penalty(real_scores: Tensor) -> Tensor:
    """E[D(x)^2] on real data: PGGAN's fourth critic term, weighted by epsilon = 0.001.

    The Wasserstein loss only sees score differences, so without it the
    critic's outputs can drift far from zero together.
    """
    return real_scores.pow(2).mean()


def r1_penalty(real_scores: Tensor, real_images: Tensor) -> Tensor:
    """E[||grad_x D(x)||^2] on real data (R1, Mescheder et al. 2018); the loss adds gamma / 2 times it.

    ``real_images`` must require grad and ``real_scores`` be D's output on them,
    so D is not run twice; ``create_graph`` keeps the penalty trainable.
    """
    (grads,) = torch.autograd.grad(real_scores.sum(), real_images, create_graph=True)
    return grads.pow(2).flatten(1).sum(1).mean()


def l1_reconstruction_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """E|y - G(x)|: pix2pix's L1 term, which keeps the low frequencies right where the GAN sharpens."""
    return (outputs - targets).abs().mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (geometric GAN; SPADE's and SEAN's loss)."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]: the generator's side of the hinge game."""
    return -fake_logits.mean()


def multiscale_mean(per_scale: list[Tensor], loss: Callable[..., Tensor], *others: list[Tensor]) -> Tensor:
    """``loss`` applied to each discriminator scale's logits (and the matching ``others``), averaged."""
    terms = [loss(logits, *(other[k] for other in others)) for k, logits in enumerate(per_scale)]
    return torch.stack(terms).mean()


def feature_matching_loss(real_features: list[list[Tensor]], fake_features: list[list[Tensor]]) -> Tensor:
    """pix2pixHD's discriminator feature matching: L1 between D's activations on real and fake images.

    Each argument holds, per discriminator scale, the activations of every
    layer, the last being the logits (not matched). The L1 means of the
    matched layers are summed per scale and averaged over scales; the real side
    is a constant target.
    """
    per_scale = [torch.stack([(fake - real.detach()).abs().mean() for real, fake in zip(reals[:-1], fakes[:-1])]).sum()
                 for reals, fakes in zip(real_features, fake_features)]
    return torch.stack(per_scale).mean()
