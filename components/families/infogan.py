"""InfoGAN (Chen et al., 2016): maximise a lower bound on I(c; G(z, c)) so the codes c become interpretable.

G's input is noise z joined with the codes c: one 10-way categorical (one-hot)
and two continuous ones, uniform on [-1, 1]. Q shares D's body and predicts the
categorical's logits and the continuous codes' Gaussian mean (fixed unit std as
in the paper's MNIST code, or learned). The bound L_I = H(c) + E[log Q(c | G(z, c))]
is added to both the G and the D/Q objectives, weighted lambda = 1 for the
categorical and a smaller lambda for continuous codes (the paper: so that the
differential-entropy term stays on the GAN objective's scale; 0.1 here).

Architecture (the paper's MNIST table, sized for any 4·2^k or 7·2^k image):
G: FC 1024-BN-ReLU, FC (2w x base x base)-BN-ReLU, 4x4 stride-2 up-convolutions
(BN-ReLU between) to the image; D: 4x4 stride-2 convolutions with LeakyReLU(0.1)
(BN on every convolution but the first), FC 1024-BN-LeakyReLU, then D's FC logit;
Q: FC 128-BN-LeakyReLU-FC on the same FC 1024 features (not detached: the
information loss trains the shared trunk too).
Adam lr 2e-4 for D and 1e-3 for G, beta1 0.5; z of 62 dimensions.

``generate(n, condition)``: condition None samples the codes from their priors;
a dict ``{"categorical": ..., "continuous": ...}`` fixes either or both
(categorical as n class indices or n x K one-hot, continuous as n x C values;
a missing key is sampled); a tensor is n x (K + C) = [one-hot categorical ‖ continuous].

``task_metrics`` (what the evaluator reports for this family):

- ``code_class_accuracy``: ``samples_per_code`` images for each categorical value
  (z and continuous codes from their priors) are classified by ``real.classify``;
  the K x classes count matrix is matched one code to one class by the Hungarian
  method (maximum total count) and the accuracy is the matched count over all
  images. ``code_class_nmi``: the NMI of the same (code, predicted class) pairs.
  Both need the evaluator's digit classifier and are left out without one.
- ``continuous_code_monotonicity_<i>`` and ``continuous_code_effect_<i>`` (i from 0):
  ``sweep_rows`` rows of (z, categorical, other continuous codes) drawn from the
  priors and held fixed while code i takes ``sweep_steps`` evenly spaced values
  in [-2, 2] (the paper's figures extrapolate past the prior's [-1, 1]). Each
  image of a row is reduced to its projection onto the row's end-to-end
  difference, <x_j - x_first, x_last - x_first>. Monotonicity is the mean over
  rows of |Spearman's rho| between the sweep position and that projection
  (average ranks for ties; a row whose projections are all equal, as when the
  code has no effect, scores 0). Effect is the mean over rows of the mean
  absolute pixel difference between the row's last and first images (pixels in
  [-1, 1]), so a code too weak to see cannot pass on rank noise alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import (ExportedGenerator, Family, ImageBatch, LossResult, Networks, Phase, RealSplit,
                                      TaskKind)
from components.nets.dcgan import dcgan_init, spatial_plan


@dataclass
class InfoGANConfig:
    z_dim: int = 62  # incompressible noise; the codes come on top of it
    categories: int = 10  # one categorical code of this many values
    continuous_codes: int = 2  # uniform(-1, 1) codes
    learn_std: bool = False  # the paper's MNIST run fixes Q's std to 1 for continuous codes
    lambda_categorical: float = 1.0
    lambda_continuous: float = 0.1
    g_width: int = 64  # channels of G's last hidden layer (paper: 64, then 128 at 7x7)
    d_width: int = 64
    fc_width: int = 1024
    q_width: int = 128
    d_lr: float = 2e-4
    g_lr: float = 1e-3
    beta1: float = 0.5


def doubling_widths(width: int, doublings: int) -> list[int]:
    """Channels from the image side inward: width, 2 width, 4 width, ..."""
    return [width * 2 ** i for i in range(doublings)]


SWEEP_LIMIT = 2.0  # continuous codes are swept over [-2, 2], past the prior's [-1, 1], as in the paper's figures


def matched_accuracy(codes: np.ndarray, predicted: np.ndarray, num_codes: int, num_classes: int) -> float:
    """Accuracy of reading each code as one class, under the best one-to-one code-to-class matching.

    An unsupervised code's values carry no class names, so the Hungarian method
    picks the matching with the largest total count; unlike a per-code argmax it
    cannot send two codes to one class. Codes left unmatched (more codes than
    classes) count as wrong.
    """
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((num_codes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(codes), np.asarray(predicted)), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / max(len(codes), 1))


def projection_along_sweep(images: Tensor) -> Tensor:
    """rows x steps x ... images -> rows x steps: <x_j - x_first, x_last - x_first> per image of each row."""
    flat = images.flatten(2).double()
    start, end = flat[:, :1], flat[:, -1:]
    return ((flat - start) * (end - start)).sum(-1)


def spearman_with_position(values: Tensor) -> Tensor:
    """rows x steps -> rows: Spearman's rho between the step index and the values, per row.

    Ties take their average rank; a constant row has no order at all and scores 0
    rather than NaN, so a code without effect counts as not monotone.
    """
    from scipy.stats import rankdata

    ranks = torch.from_numpy(rankdata(values.cpu().numpy(), axis=1)).double()
    position = torch.arange(values.size(1), dtype=torch.float64)
    ranks = ranks - ranks.mean(1, keepdim=True)
    position = position - position.mean()
    spread = ranks.pow(2).sum(1).sqrt() * position.pow(2).sum().sqrt()
    return torch.where(spread > 0, (ranks * position).sum(1) / spread.clamp(min=1e-300), torch.zeros_like(spread))


def sweep_scores(images: Tensor) -> tuple[float, float]:
    """(monotonicity, effect) of rows x steps x C x H x W sweeps: the mean |Spearman rho| of each row's
    projections against the sweep position, and the mean absolute pixel change from first to last image."""
    monotonicity = spearman_with_position(projection_along_sweep(images)).abs().mean()
    effect = (images[:, -1] - images[:, 0]).abs().flatten(1).mean(1).mean()
    return float(monotonicity), float(effect)


class InfoGANGenerator(nn.Module):
    """[z ‖ codes] -> image in [-1, 1] (tanh where the paper, on [0, 1] pixels, used a sigmoid)."""

    def __init__(self, in_dim: int, channels: int, image_size: int, width: int, fc_width: int):
        super().__init__()
        self.base, doublings = spatial_plan(image_size)
        widths = list(reversed(doubling_widths(width, doublings)))
        self.top = widths[0]
        self.project = nn.Sequential(
            nn.Linear(in_dim, fc_width), nn.BatchNorm1d(fc_width), nn.ReLU(True),
            nn.Linear(fc_width, self.top * self.base ** 2), nn.BatchNorm1d(self.top * self.base ** 2), nn.ReLU(True))
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, latent: Tensor) -> Tensor:
        return self.net(self.project(latent).view(latent.size(0), self.top, self.base, self.base))


class InfoGANDiscriminator(nn.Module):
    """image -> (D's real/fake logit, Q's code parameters), both from one shared body."""

    def __init__(self, channels: int, image_size: int, width: int, fc_width: int, q_width: int, q_out: int):
        super().__init__()
        base, doublings = spatial_plan(image_size)
        widths = doubling_widths(width, doublings)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.1, True)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.1, True)]
        self.body = nn.Sequential(*layers, nn.Flatten(),
                                  nn.Linear(widths[-1] * base ** 2, fc_width), nn.BatchNorm1d(fc_width),
                                  nn.LeakyReLU(0.1, True))
        self.d_head = nn.Linear(fc_width, 1)
        self.q_head = nn.Sequential(nn.Linear(fc_width, q_width), nn.BatchNorm1d(q_width), nn.LeakyReLU(0.1, True),
                                    nn.Linear(q_width, q_out))
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return self.d_head(features).squeeze(1), self.q_head(features)


class InfoGANExportedGenerator(ExportedGenerator):
    """``forward(inputs)`` with inputs = [z ‖ one-hot categorical ‖ continuous codes], G's own input."""

    def __init__(self, generator: nn.Module, z_dim: int, categories: int, continuous_codes: int):
        super().__init__(generator, z_dim + categories + continuous_codes)
        self.z_dim, self.categories, self.continuous_codes = z_dim, categories, continuous_codes

    def forward(self, inputs: Tensor) -> Tensor:
        return self.generator(inputs)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Gaussian z, every category in turn, continuous codes uniform on [-1, 1]."""
        rng = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=rng)
        onehot = F.one_hot(torch.arange(n) % self.categories, self.categories).float()
        continuous = torch.rand(n, self.continuous_codes, generator=rng) * 2 - 1
        return torch.cat([z, onehot, continuous], dim=1)


@register
class InfoGAN(Family):
    name = "infogan"
    task = TaskKind.UNCONDITIONAL
    paper = ("Chen et al., InfoGAN: Interpretable Representation Learning by Information Maximizing "
             "Generative Adversarial Nets, NeurIPS 2016 (arXiv:1606.03657)")
    Config = InfoGANConfig
    tiny = {"z_dim": 4, "categories": 3, "g_width": 4, "d_width": 4, "fc_width": 8, "q_width": 8}

    @property
    def code_dim(self) -> int:
        return self.config.categories + self.config.continuous_codes

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        q_out = cfg.categories + cfg.continuous_codes * (2 if cfg.learn_std else 1)  # logits, means (, log-stds)
        return {"G": InfoGANGenerator(cfg.z_dim + self.code_dim, c, s, cfg.g_width, cfg.fc_width),
                "D": InfoGANDiscriminator(c, s, cfg.d_width, cfg.fc_width, cfg.q_width, q_out)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg, betas = self.config, (self.config.beta1, 0.999)
        return {"G": torch.optim.Adam(self.nets["G"].parameters(), cfg.g_lr, betas=betas),
                "D": torch.optim.Adam(self.nets["D"].parameters(), cfg.d_lr, betas=betas)}  # D's body and Q head

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def sample_codes(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(categorical indices, continuous codes) from the priors: uniform over categories, U[-1, 1]."""
        categorical = torch.randint(0, self.config.categories, (n,), device=device)
        continuous = torch.rand(n, self.config.continuous_codes, device=device) * 2 - 1
        return categorical, continuous

    def generator_input(self, z: Tensor, categorical: Tensor, continuous: Tensor) -> Tensor:
        onehot = F.one_hot(categorical, self.config.categories).to(z.dtype)
        return torch.cat([z, onehot, continuous.to(z.dtype)], dim=1)

    def information_loss(self, q_out: Tensor, categorical: Tensor, continuous: Tensor) -> LossResult:
        """-lambda L_I up to the constant H(c): the weighted negative log-likelihoods of the codes under Q."""
        cfg, k, c = self.config, self.config.categories, self.config.continuous_codes
        logits, mean = q_out[:, :k], q_out[:, k:k + c]
        log_std = q_out[:, k + c:] if cfg.learn_std else 0.0
        categorical_nll = losses.categorical_code_loss(logits, categorical)
        continuous_nll = losses.gaussian_code_loss(mean, continuous, log_std)
        loss = cfg.lambda_categorical * categorical_nll + cfg.lambda_continuous * continuous_nll
        # L_I for the categorical code: H(c) - E[-log Q(c|x)], H(c) = log K for the uniform prior
        return loss, {"info_loss": loss.item(), "mi_categorical": math.log(k) - categorical_nll.item(),
                      "q_continuous_nll": continuous_nll.item()}

    def _fake(self, n: int, nets: Networks, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        categorical, continuous = self.sample_codes(n, device)
        z = self.latent(n, self.config.z_dim, device)
        return nets["G"](self.generator_input(z, categorical, continuous)), categorical, continuous

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """BCE for D plus the information loss for Q on the same fakes (D and Q share one optimizer)."""
        with torch.no_grad():
            fake, categorical, continuous = self._fake(len(batch), nets, batch.images.device)
        real_logits, _ = nets["D"](batch.images)
        fake_logits, q_out = nets["D"](fake)
        adversarial, logs = losses.bce_discriminator_loss_with_logs(real_logits, fake_logits)
        info, info_logs = self.information_loss(q_out, categorical, continuous)
        loss = adversarial + info
        return loss, {**logs, **info_logs, "d_loss": loss.item(), "d_adversarial": adversarial.item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """Non-saturating -log D(G(z, c)) plus the same information loss, now through G."""
        fake, categorical, continuous = self._fake(len(batch), nets, batch.images.device)
        fake_logits, q_out = nets["D"](fake)
        adversarial = losses.nonsaturating_generator_loss(fake_logits)
        info, _ = self.information_loss(q_out, categorical, continuous)
        loss = adversarial + info
        return loss, {"g_loss": loss.item(), "g_adversarial": adversarial.item(), "g_info": info.item()}

    def codes_from_condition(self, n: int, condition: Any) -> tuple[Tensor, Tensor]:
        """(categorical indices, continuous codes) for ``generate``: sampled, or fixed by ``condition``."""
        categorical, continuous = self.sample_codes(n, self.device)
        k = self.config.categories
        if isinstance(condition, Tensor):
            condition = {"categorical": condition[:, :k], "continuous": condition[:, k:]}
        if isinstance(condition, dict):
            fixed_categorical = condition.get("categorical")
            if fixed_categorical is not None:
                fixed_categorical = fixed_categorical.to(self.device)
                categorical = fixed_categorical.argmax(1) if fixed_categorical.dim() == 2 else fixed_categorical
            if condition.get("continuous") is not None:
                continuous = condition["continuous"].to(self.device, torch.float32)
        elif condition is not None:
            raise TypeError(f"infogan condition must be None, a dict of codes or a tensor, not {type(condition)}")
        return categorical.long(), continuous

    @torch.no_grad()
    def generate(self, n: int, condition: Any = None) -> Tensor:
        categorical, continuous = self.codes_from_condition(n, condition)
        z = self.latent(n, self.config.z_dim)
        return self.nets["G"](self.generator_input(z, categorical, continuous))

    @torch.no_grad()
    def task_metrics(self, real: RealSplit, samples_per_code: int = 100, sweep_rows: int = 200,
                     sweep_steps: int = 9) -> dict[str, float]:
        """Whether the codes came to mean something: the categorical code's agreement with the evaluator's
        digit class (the paper's MNIST result) and each continuous code's monotone effect on the image.
        How each is measured is in the module docstring."""
        was_training = self.nets.training
        self.nets.eval()  # G's batch norm from running statistics: an image must not depend on its batch
        try:
            scores = self.code_class_scores(real, samples_per_code) if real.classify is not None else {}
            for code in range(self.config.continuous_codes):
                monotonicity, effect = sweep_scores(self.continuous_sweep(code, sweep_rows, sweep_steps))
                scores[f"continuous_code_monotonicity_{code}"] = monotonicity
                scores[f"continuous_code_effect_{code}"] = effect
        finally:
            self.nets.train(was_training)
        return scores

    def code_class_scores(self, real: RealSplit, samples_per_code: int) -> dict[str, float]:
        """``code_class_accuracy`` (Hungarian-matched) and ``code_class_nmi`` of each categorical value's images."""
        from sklearn.metrics import normalized_mutual_info_score

        codes = torch.arange(self.config.categories).repeat_interleave(samples_per_code)
        probabilities = real.classify(self.generate(len(codes), {"categorical": codes}).clamp(-1, 1).cpu())
        predicted = probabilities.argmax(1).cpu().numpy()
        return {"code_class_accuracy": matched_accuracy(codes.numpy(), predicted, self.config.categories,
                                                        probabilities.size(1)),
                "code_class_nmi": float(normalized_mutual_info_score(codes.numpy(), predicted))}

    def continuous_sweep(self, code: int, rows: int, steps: int) -> Tensor:
        """rows x steps images (on the CPU): per row one z, categorical and other continuous codes from the
        priors, held fixed while continuous code ``code`` steps evenly over [-SWEEP_LIMIT, SWEEP_LIMIT]."""
        categorical, continuous = self.sample_codes(rows, self.device)
        z = self.latent(rows, self.config.z_dim).repeat_interleave(steps, 0)
        categorical, continuous = categorical.repeat_interleave(steps, 0), continuous.repeat_interleave(steps, 0)
        continuous[:, code] = torch.linspace(-SWEEP_LIMIT, SWEEP_LIMIT, steps, device=self.device).repeat(rows)
        images = self.nets["G"](self.generator_input(z, categorical, continuous))
        return images.view(rows, steps, *images.shape[1:]).cpu()

    def export_generator(self) -> InfoGANExportedGenerator:
        cfg = self.config
        return InfoGANExportedGenerator(self.nets["G"], cfg.z_dim, cfg.categories, cfg.continuous_codes)
