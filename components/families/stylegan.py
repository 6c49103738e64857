"""StyleGAN (Karras, Laine & Aila, 2019): a style-based generator against PGGAN's discriminator.

Generator (``components/nets/style.py``): z is pixel-normalised and mapped by 8
fully connected layers (learning-rate multiplier 0.01) to w; the synthesis
network starts from a learned constant at the base resolution, and after every
convolution adds per-pixel noise with a learned per-channel scale and applies
AdaIN with a scale and shift that a learned affine map computes from w. Every
layer uses the equalised learning rate of PGGAN (``components/nets/progressive.py``).
Upsampling and D's downsampling are low-pass filtered ([1, 2, 1]).

Regularisation and sampling: style mixing in training (with probability 0.9 a
sample's styles come from two latents, switching at a random crossover layer,
for the fakes of both the D and the G step); a tracked average of w (an EMA
buffer, decay 0.995, updated from each G step's batch and averaged over
data-parallel ranks) for the truncation trick w' = w_avg + psi (w - w_avg).
``truncation_psi`` (default 1.0: no truncation) is what evaluation samples with;
``generate_truncated`` takes any psi and ``mix_styles`` generates coarse styles
from one latent and fine ones from another. ``sample_variants`` gives the
evaluator two more sample sets to score beside the ordinary ones: truncated at
``variant_psi`` ("psi_0.7": precision should rise and recall fall, as in the
paper) and style-mixed ("style_mixed": every sample mixed at a crossover drawn
as in training; it should pass the same bars as the ordinary samples).

Loss: the paper's FFHQ setup, the non-saturating logistic loss with the R1
penalty (gamma / 2) E[||grad D(x)||^2] on reals, gamma = 10, applied every step
(lazy regularisation is StyleGAN2). (The seed notes mention WGAN-GP, which the
paper used for CelebA-HQ only.) Adam(lr 1e-3, beta1 0, beta2 0.99).

Resolution: no progressive growing (the paper's own ablations show the style
generator does not need it at small sizes; it trained with growing for its
1024 px results only). G and D work at the data size directly, with the same
base as PGGAN: 28 px is 7 -> 14 -> 28 (6 style layers), 32 px is 4 -> ... -> 32
(8 style layers). Widths follow PGGAN's min(max_width, width_base / 2^k), scaled
from 512 to 64 channels (64, 64, 32 at 7, 14, 28 px), and z and w from 512 to
128 dimensions, for CPUs.

Export: one tensor in, one out: mapping + truncation + synthesis with the fixed
per-layer noise maps the network keeps as buffers (deterministic, so the
registry's torch.export graph reproduces the eager model), output in [-1, 1].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import (ExportedGenerator, Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      rank_mean, unwrap)
from components.nets.progressive import ProgressiveDiscriminator, stage_resolutions, stage_widths
from components.nets.style import NoiseMode, StyleGenerator, TruncatedStyleGenerator


@dataclass
class StyleGANConfig:
    z_dim: int = 128  # paper: 512
    w_dim: int = 128  # paper: 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    width_base: int = 128  # channels per resolution: min(max_width, width_base / 2^k)
    max_width: int = 64  # paper: 512
    blur: bool = True  # [1, 2, 1] low-pass after upsampling in G and before downsampling in D
    mbstd_group: int = 4
    style_mixing_prob: float = 0.9
    r1_gamma: float = 10.0
    w_avg_beta: float = 0.995  # decay of the tracked average w
    truncation_psi: float = 1.0  # psi used by evaluation's samples and the export; 1 is no truncation
    variant_psi: float = 0.7  # psi of the truncated variant evaluation also scores; the paper's figures use 0.7
    lr: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.99

    def __post_init__(self) -> None:
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if not 0.0 <= self.w_avg_beta <= 1.0:
            raise ValueError(f"w_avg_beta must be in [0, 1], got {self.w_avg_beta}")
        if self.mapping_layers < 1 or self.mapping_lr_multiplier <= 0:
            raise ValueError("the mapping network needs at least 1 layer and a positive lr multiplier")


@register
class StyleGAN(Family):
    name = "stylegan"
    task = TaskKind.UNCONDITIONAL
    paper = ("Karras, Laine & Aila, A Style-Based Generator Architecture for Generative Adversarial Networks, "
             "CVPR 2019 (arXiv:1812.04948)")
    Config = StyleGANConfig
    tiny = {"z_dim": 4, "w_dim": 4, "mapping_layers": 2, "width_base": 8, "max_width": 4}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        widths = stage_widths(len(stage_resolutions(s)), cfg.width_base, cfg.max_width)
        return {"G": StyleGenerator(cfg.z_dim, cfg.w_dim, c, s, widths, cfg.mapping_layers,
                                    cfg.mapping_lr_multiplier, cfg.blur),
                "D": ProgressiveDiscriminator(c, s, widths, cfg.mbstd_group, blur=cfg.blur, grow=False)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    @property
    def num_layers(self) -> int:
        """Style layers of the synthesis network (two per resolution)."""
        return unwrap(self.nets["G"]).num_layers

    def mixing_inputs(self, n: int, device: torch.device, probability: float | None = None) -> dict[str, Tensor]:
        """Second latents and per-sample crossovers for style-mixing regularisation.

        A mixed sample takes layers [0, k) from its first latent and [k, L) from
        the second, k uniform in 1..L-1; an unmixed one has k = L. Each sample is
        mixed with ``probability`` (default: the config's ``style_mixing_prob``).
        """
        probability = self.config.style_mixing_prob if probability is None else probability
        if probability == 0.0:
            return {}
        layers = self.num_layers
        crossover = torch.randint(1, layers, (n,), device=device)
        mixed = torch.rand(n, device=device) < probability
        return {"mix_latents": self.latent(n, self.config.z_dim, device),
                "crossover": torch.where(mixed, crossover, torch.full_like(crossover, layers))}

    def training_fakes(self, generator: nn.Module, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(images, z) as training makes them: random noise, style mixing, no truncation."""
        z = self.latent(n, self.config.z_dim, device)
        return generator(z, **self.mixing_inputs(n, device)), z

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        with torch.no_grad():
            fake, _ = self.training_fakes(nets["G"], len(batch), batch.images.device)
        real = batch.images.detach().requires_grad_(True)
        real_logits, fake_logits = nets["D"](real), nets["D"](fake)
        logistic = losses.bce_discriminator_loss(real_logits, fake_logits)
        r1 = losses.r1_penalty(real_logits, real)
        loss = logistic + 0.5 * self.config.r1_gamma * r1
        return loss, {"d_loss": loss.item(), "d_logistic": logistic.item(), "r1": r1.item(),
                      "d_real": torch.sigmoid(real_logits).mean().item(),
                      "d_fake": torch.sigmoid(fake_logits).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake, z = self.training_fakes(nets["G"], len(batch), batch.images.device)
        loss = losses.nonsaturating_generator_loss(nets["D"](fake))
        self.track_w_avg(unwrap(nets["G"]), z)
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def track_w_avg(self, generator: StyleGenerator, z: Tensor) -> None:
        """Move w_avg towards this batch's mean w (of the first latents, as in the paper's code).

        The mean is taken over all ranks first, so every rank's w_avg stays
        identical (DDP does not sync buffers here). Mapping z again under
        no_grad gives the same w as the step's own forward, for a fraction of
        the synthesis cost.
        """
        generator.update_w_avg(rank_mean(generator.mapping(z).mean(dim=0)), self.config.w_avg_beta)

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.generate_truncated(n, self.config.truncation_psi)

    @torch.no_grad()
    def generate_truncated(self, n: int, truncation_psi: float, noise: NoiseMode = "random") -> Tensor:
        """n images in [-1, 1] with w truncated towards w_avg by psi (0: all w_avg, 1: untruncated)."""
        z = self.latent(n, self.config.z_dim)
        return self.nets["G"](z, truncation_psi=truncation_psi, noise=noise).clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample_variants(self, n: int) -> dict[str, Tensor]:
        """Truncated samples (``variant_psi``) and style-mixed ones (every sample mixed, the crossover drawn as
        in training, truncated like the ordinary samples), for the evaluator to score."""
        z = self.latent(n, self.config.z_dim)
        truncated = self.nets["G"](z, truncation_psi=self.config.variant_psi)
        mixed = self.nets["G"](z, **self.mixing_inputs(n, z.device, probability=1.0),
                               truncation_psi=self.config.truncation_psi)
        return {f"psi_{self.config.variant_psi:g}": truncated.clamp(-1.0, 1.0), "style_mixed": mixed.clamp(-1.0, 1.0)}

    @torch.no_grad()
    def mix_styles(self, z_a: Tensor, z_b: Tensor, crossover: int, truncation_psi: float | None = None,
                   noise: NoiseMode = "random") -> Tensor:
        """Images whose styles for layers [0, crossover) come from z_a (coarse) and [crossover, L) from z_b (fine).

        crossover = 0 is z_b alone, crossover = ``num_layers`` is z_a alone.
        """
        if not 0 <= crossover <= self.num_layers:
            raise ValueError(f"crossover must be in [0, {self.num_layers}], got {crossover}")
        psi = self.config.truncation_psi if truncation_psi is None else truncation_psi
        device = self.device
        return self.nets["G"](z_a.to(device), mix_latents=z_b.to(device), crossover=crossover,
                              truncation_psi=psi, noise=noise).clamp(-1.0, 1.0)

    def export_generator(self) -> ExportedGenerator:
        """A snapshot of G (mapping + synthesis, fixed noise, ``truncation_psi``) in eval mode."""
        snapshot = TruncatedStyleGenerator(copy.deepcopy(unwrap(self.nets["G"])), self.config.truncation_psi)
        return ExportedGenerator(snapshot, self.config.z_dim).eval()
