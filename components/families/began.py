"""BEGAN (Berthelot, Schumm & Metz, 2017): an auto-encoder D and a proportional control of the equilibrium.

D is an auto-encoder (``components/nets/began.py``) and L(v) = |v - D(v)| its L1
reconstruction error. L_D = L(x) - k_t L(G(z)), L_G = L(G(z)), and
k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1) keeps
E[L(G(z))] = gamma E[L(x)]. M_global = L(x) + |gamma L(x) - L(G(z))| measures
convergence; the D phase, which runs every iteration, logs it as ``convergence_m``.
Paper defaults: z uniform in [-1, 1]^h with N_z = h = 64, n = 64 filters,
gamma = 0.5, lambda_k = 0.001, k_0 = 0, Adam lr 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components import losses
from components.families import register
from components.families.base import (ExportedGenerator, Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      rank_mean, unwrap)
from components.nets.began import AutoEncoderDiscriminator, BEGANDecoder


@dataclass
class BEGANConfig:
    z_dim: int = 64  # N_z; the paper sets it equal to the embedding size h
    h_dim: int = 64  # D's auto-encoder bottleneck
    g_width: int = 64  # n, the filters per layer of G (and of D's decoder)
    d_width: int = 64
    gamma: float = 0.5  # diversity ratio E[L(G(z))] / E[L(x)]; the paper shows 0.3 to 0.7
    lambda_k: float = 0.001  # proportional gain of the k_t controller
    k_init: float = 0.0  # the paper starts with k_0 = 0
    lr: float = 1e-4
    beta1: float = 0.5  # the paper does not give betas; 0.5 as in the common reference implementations
    beta2: float = 0.999


class EquilibriumDiscriminator(AutoEncoderDiscriminator):
    """The auto-encoder carrying k_t as a buffer, so checkpoints save it and resumes restore it."""

    def __init__(self, channels: int, image_size: int, width: int, h_dim: int, k_init: float):
        super().__init__(channels, image_size, width, h_dim)
        self.register_buffer("k_t", torch.tensor(float(k_init)))


class UniformLatentExport(ExportedGenerator):
    """The exported generator, whose input example is drawn from BEGAN's own prior U[-1, 1]^N_z."""

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        return torch.rand(n, self.latent_dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@register
class BEGAN(Family):
    name = "began"
    task = TaskKind.UNCONDITIONAL
    paper = ("Berthelot, Schumm & Metz, BEGAN: Boundary Equilibrium Generative Adversarial Networks, 2017 "
             "(arXiv:1703.10717)")
    Config = BEGANConfig
    tiny = {"z_dim": 4, "h_dim": 4, "g_width": 4, "d_width": 4}

    def build_networks(self) -> dict[str, nn.Module]:
        c, s, cfg = self.spec.channels, self.spec.image_size, self.config
        return {"G": BEGANDecoder(cfg.z_dim, c, s, cfg.g_width, squash=True),
                "D": EquilibriumDiscriminator(c, s, cfg.d_width, cfg.h_dim, cfg.k_init)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.adam_per_module(self.config.lr, (self.config.beta1, self.config.beta2))

    def phases(self) -> list[Phase]:
        return [Phase("D", ("D",), self.discriminator_loss), Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def latent(self, n: int, dim: int, device: torch.device | None = None) -> Tensor:
        """z ~ U[-1, 1]^N_z, as in the paper."""
        return torch.rand(n, dim, device=device or self.device) * 2 - 1

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        real = batch.images
        with torch.no_grad():
            fake = nets["G"](self.latent(len(batch), self.config.z_dim, real.device))
        real_energy = losses.autoencoder_l1_energy(real, nets["D"](real))
        fake_energy = losses.autoencoder_l1_energy(fake, nets["D"](fake))
        k_buffer = unwrap(nets["D"]).k_t
        k_used = k_buffer.clone()  # k_t of this step; the update below is for the next one
        loss = losses.began_discriminator_loss(real_energy, fake_energy, k_used)
        measure = self.update_k(k_buffer, real_energy.detach(), fake_energy.detach())
        # M_global every iteration: the zoo report checks that it falls over training
        return loss, {"d_loss": loss.item(), "l_real": real_energy.item(), "l_fake": fake_energy.item(),
                      "k_t": k_used.item(), "convergence_m": measure}

    @torch.no_grad()
    def update_k(self, k_buffer: Tensor, real_energy: Tensor, fake_energy: Tensor) -> float:
        """Step k_t in place and return M_global.

        Under DDP each rank sees its own shard, so k_t updated from local losses
        would drift apart between ranks (DDP does not sync buffers here:
        forward_sync_buffers=False). Averaging the two energies over ranks first
        gives every rank the same update, so k_t stays identical everywhere.
        """
        real_energy, fake_energy = rank_mean(torch.stack([real_energy, fake_energy])).unbind()
        cfg = self.config
        k_buffer.copy_(losses.began_k_update(k_buffer, real_energy, fake_energy, cfg.gamma, cfg.lambda_k))
        return losses.began_convergence_measure(real_energy, fake_energy, cfg.gamma).item()

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        fake = nets["G"](self.latent(len(batch), self.config.z_dim, batch.images.device))
        loss = losses.autoencoder_l1_energy(fake, nets["D"](fake))
        return loss, {"g_loss": loss.item()}

    @torch.no_grad()
    def generate(self, n: int, condition: None = None) -> Tensor:
        return self.nets["G"](self.latent(n, self.config.z_dim))

    def export_generator(self) -> UniformLatentExport:
        return UniformLatentExport(self.nets["G"], self.config.z_dim)
