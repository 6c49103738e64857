"""SPADE / GauGAN (Park et al., 2019): images from label maps through spatially-adaptive normalisation.

G: ``SPADEGenerator`` (``components/nets/spade.py``). Every normalisation is
SPADE: parameter-free batch norm, then a per-pixel scale and shift predicted
from the one-hot label map at that layer's resolution, so the layout is not
washed out by normalisation. Without the image encoder G starts from the
label map downsampled to 4 x 4 (the deterministic mode); with it, from a
linear map of z (the multi-modal mode).

D: two PatchGANs (``MultiScaleDiscriminator``: spectral norm and instance
norm), the second on the input average-pooled once, each judging
concat(one-hot label map, image).

Losses (hinge GAN, pix2pixHD's feature matching):
    L_D = mean over scales of E[max(0, 1 - D(m, x))] + E[max(0, 1 + D(m, G(m)))]
    L_G = -mean over scales of E[D(m, G(m))] + lambda_fm * FM + lambda_kl * KL
where FM is the L1 distance between D's intermediate activations on real and
fake pairs (summed over layers, averaged over scales) and KL the encoder's
divergence from N(0, I) (only with ``use_encoder``).

Image encoder (``use_encoder``): E(x) -> (mu, logvar), z = mu + sigma * eps
feeds G, so in training G reconstructs the style of the real image it is
paired with; ``generate`` then samples z ~ N(0, I) for varied outputs, or
takes z = mu of exemplars (``ExemplarCondition``) for style-guided ones. E is
updated in G's phase with its own optimizer at G's learning rate (the paper
puts E's parameters into G's optimizer: the same thing).

Left out: the VGG perceptual loss (it needs downloaded ImageNet weights; the
paper's ablation trains without it, at some cost in FID), synchronized batch
norm across GPUs (the trainer's data-parallel ranks each normalise their own
shard), and the paper's xavier(0.02) initialisation (torch's defaults; every
convolution of G's blocks and of D is spectrally normalised anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (ExemplarCondition, Family, ImageBatch, LossResult, Networks, Phase, TaskKind,
                                      TranslationExport, one_hot_maps)
from components.nets.patchgan import MultiScaleDiscriminator
from components.nets.spade import SPADEGenerator, frozen_spectral_norm, upsampling_plan


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over z's dimensions, averaged over the batch.

    = -1/2 sum_d (1 + logvar - mu^2 - exp(logvar)). The paper's code sums over
    the batch too; the per-sample mean keeps the weight 0.05 meaning the same
    at any batch size.
    """
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): a sample that gradients flow through to mu and logvar."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


@dataclass
class SPADEConfig:
    # Widths: the paper's ngf 64 (1024 channels at the 4 x 4 start), 128 hidden channels in every SPADE,
    # ndf 64 and 4-layer PatchGANs are sized for 256 px photos. These keep one iteration at batch 32, 32 x 32
    # near 0.2 s on one CPU thread (measured on a loaded 2-core machine, where DCGAN took 0.07 s); SPADE's
    # modulation convs at 32 x 32 are most of it. On shapes, g_width 16 lowered the pixel L1 to the real image
    # after 200 steps from 0.16 to 0.14 for 1.5x the time.
    g_width: int = 8  # channels of G's last block; x2, x4 toward the 4 x 4 start (capped at x4)
    spade_hidden: int = 16  # channels of each SPADE's shared conv on the label map (paper: 128)
    d_width: int = 16  # first PatchGAN layer, doubling per layer (paper: 64)
    d_layers: int = 2  # stride-2 layers of each PatchGAN: 34 x 34 patches at the fine scale (paper: 4 at 256 px)
    d_scales: int = 2  # PatchGANs, the k-th on the input pooled k times (paper: 2)
    lambda_fm: float = 10.0  # feature matching weight (paper: 10)
    use_encoder: bool = False  # multi-modal synthesis with the image encoder
    z_dim: int = 64  # used only with the encoder (paper: 256)
    e_width: int = 16  # the encoder's first conv (paper: 64, doubling to 512)
    lambda_kl: float = 0.05  # KL weight (paper: 0.05)
    # TTUR (Heusel et al.): D learns 4x faster than G. Adam's beta1 = 0 (no momentum) as in the paper's text;
    # its released code defaults to beta2 = 0.9 with TTUR, the paper states 0.999, which is kept here.
    g_lr: float = 1e-4
    d_lr: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999

    def __post_init__(self) -> None:
        for name in ("g_width", "spade_hidden", "d_width", "d_layers", "d_scales", "z_dim", "e_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class ImageEncoder(nn.Module):
    """Image -> (mu, logvar) of z: stride-2 3x3 convolutions (spectral and instance norm) down to G's start grid.

    The paper's ConvEncoder, shortened to the image size: it halves the image
    until G's start size (4 x 4 at 32 or 64 px), doubling the width (capped
    at 8x), then two linear heads read mu and logvar from the flattened grid.
    """

    def __init__(self, channels: int, image_size: int, z_dim: int, width: int = 16):
        super().__init__()
        _, downs = upsampling_plan(image_size)
        layers, cin, size = [], channels, image_size
        for i in range(max(downs, 1)):
            cout = width * min(2 ** i, 8)
            layers += [spectral_norm(nn.Conv2d(cin, cout, 3, 2, 1, bias=False)), nn.InstanceNorm2d(cout),
                       nn.LeakyReLU(0.2)]
            cin, size = cout, (size - 1) // 2 + 1
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.mu = nn.Linear(cin * size * size, z_dim)
        self.logvar = nn.Linear(cin * size * size, z_dim)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(images)
        return self.mu(h), self.logvar(h)


class LabelMapTranslator(nn.Module):
    """One-hot planes N x M x H x W -> images: G's deterministic path (z = 0, the prior's mode, with the encoder)."""

    def __init__(self, generator: nn.Module, z_dim: int):
        super().__init__()
        self.generator, self.z_dim = generator, z_dim

    def forward(self, planes: Tensor) -> Tensor:
        if self.z_dim == 0:
            return self.generator(planes)
        return self.generator(planes, planes.new_zeros(planes.size(0), self.z_dim))


def patch_grid_sizes(image_size: int, scales: int, layers: int) -> list[tuple[int, int]]:
    """Per scale, the side of each PatchGAN's normalised layers' smallest map and of its logit map."""
    def conv(size: int, stride: int) -> int:
        return (size + 2 - 4) // stride + 1

    sizes, size = [], image_size
    for k in range(scales):
        if k > 0:
            size = (size + 2 - 3) // 2 + 1  # avg_pool2d(3, stride 2, padding 1)
        s = conv(size, 2)
        for i in range(1, layers + 1):
            s = conv(s, 2 if i < layers else 1)
        sizes.append((s, conv(s, 1)))
    return sizes


@register
class SPADE(Family):
    name = "spade"
    task = TaskKind.SEGMENTATION_TO_IMAGE
    paper = ("Park et al., Semantic Image Synthesis with Spatially-Adaptive Normalization, CVPR 2019 "
             "(arXiv:1903.07291): SPADE / GauGAN")
    Config = SPADEConfig
    tiny = {"g_width": 4, "spade_hidden": 4, "d_width": 4, "d_layers": 1, "z_dim": 4, "e_width": 4}

    def build_networks(self) -> dict[str, nn.Module]:
        cfg, spec = self.config, self.spec
        self.check_discriminator_fits()
        z_dim = cfg.z_dim if cfg.use_encoder else 0
        nets: dict[str, nn.Module] = {
            "G": SPADEGenerator(spec.map_classes, spec.channels, spec.image_size, cfg.g_width, z_dim=z_dim,
                                hidden=cfg.spade_hidden),
            "D": MultiScaleDiscriminator(spec.map_classes + spec.channels, cfg.d_scales, cfg.d_width, cfg.d_layers,
                                         norm="instance", spectral=True)}
        if cfg.use_encoder:
            nets["E"] = ImageEncoder(spec.channels, spec.image_size, cfg.z_dim, cfg.e_width)
        return nets

    def check_discriminator_fits(self) -> None:
        """Refuse PatchGANs too deep for the image: instance norm needs 2+ pixels, the logits 1+."""
        cfg = self.config
        for k, (normed, logits) in enumerate(patch_grid_sizes(self.spec.image_size, cfg.d_scales, cfg.d_layers)):
            if normed < 2 or logits < 1:
                raise ConfigError(f"family spade: a {cfg.d_layers}-layer PatchGAN at scale {k} leaves a {normed} x "
                                  f"{normed} map of {self.spec.image_size} px images; lower d_layers or d_scales")

    @property
    def trains_encoder(self) -> bool:
        return self.config.use_encoder

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        betas = (cfg.beta1, cfg.beta2)
        optimizers = self.adam_per_module(cfg.g_lr, betas, ("G", "E") if self.trains_encoder else ("G",))
        optimizers.update(self.adam_per_module(cfg.d_lr, betas, ("D",)))
        return optimizers

    def phases(self) -> list[Phase]:
        # G reuses D's batch: the paper steps G and D on the same one, and G's feature-matching
        # targets are D's activations on that batch's real images
        g_modules = ("G", "E") if self.trains_encoder else ("G",)
        return [Phase("D", ("D",), self.discriminator_loss),
                Phase("G", g_modules, self.generator_loss, uses_data=False)]

    # -- the two steps ----------------------------------------------------------------------------

    def fake_images(self, planes: Tensor, images: Tensor, nets: Networks) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """G's images for a batch, and (mu, logvar) of the real images' z when the encoder is on."""
        if not self.trains_encoder:
            return nets["G"](planes), None, None
        mu, logvar = nets["E"](images)
        return nets["G"](planes, reparameterise(mu, logvar)), mu, logvar

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        planes = self.planes(batch.label_maps)
        generators = [nets[name] for name in ("G", "E") if name in nets]
        with torch.no_grad(), frozen_spectral_norm(*generators):
            fake, _, _ = self.fake_images(planes, batch.images, nets)
        # one pass over fake and real pairs: one power iteration of D's spectral norm per update
        outputs = nets["D"](torch.cat([torch.cat([planes, fake], 1), torch.cat([planes, batch.images], 1)]))
        n = len(batch)
        fake_logits = [scale[-1][:n] for scale in outputs]
        real_logits = [scale[-1][n:] for scale in outputs]
        loss = losses.multiscale_mean(real_logits, losses.hinge_discriminator_loss, fake_logits)
        return loss, {"d_loss": loss.item(),
                      "d_real_logit": torch.stack([r.mean() for r in real_logits]).mean().item(),
                      "d_fake_logit": torch.stack([f.mean() for f in fake_logits]).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg = self.config
        planes = self.planes(batch.label_maps)
        fake, mu, logvar = self.fake_images(planes, batch.images, nets)
        with frozen_spectral_norm(nets["D"]):
            fake_features = nets["D"](torch.cat([planes, fake], 1))
            with torch.no_grad():
                real_features = nets["D"](torch.cat([planes, batch.images], 1))
        adversarial = losses.multiscale_mean([scale[-1] for scale in fake_features], losses.hinge_generator_loss)
        matching = losses.feature_matching_loss(real_features, fake_features)
        loss = adversarial + cfg.lambda_fm * matching
        logs = {"g_adv": adversarial.item(), "g_fm": matching.item()}
        if mu is not None:
            kl = kl_to_standard_normal(mu, logvar)
            loss = loss + cfg.lambda_kl * kl
            logs["g_kl"] = kl.item()
        logs["g_loss"] = loss.item()
        return loss, logs

    # -- generation and export --------------------------------------------------------------------

    def planes(self, label_maps: Tensor) -> Tensor:
        return one_hot_maps(label_maps, self.spec.map_classes)

    @torch.no_grad()
    def generate(self, n: int, condition: Tensor | ExemplarCondition | None = None) -> Tensor:
        """n images of label maps (int64 n x H x W): z ~ N(0, I) with the encoder, the map alone without.

        An ``ExemplarCondition`` (encoder only) takes z = mu of its exemplars:
        the layout of ``label_maps`` in the style of ``exemplars``.
        """
        if condition is None:
            raise DataError("family spade generates from label maps: pass an int64 N x H x W condition")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} label maps for {n} images")
        if isinstance(condition, ExemplarCondition):
            if not self.trains_encoder:
                raise DataError("family spade takes exemplars only with use_encoder: true")
            condition = condition.to(self.device)
            z, _ = self.nets["E"](condition.exemplars)
            return self.nets["G"](self.planes(condition.label_maps), z)
        planes = self.planes(condition.to(self.device))
        if not self.trains_encoder:
            return self.nets["G"](planes)
        return self.nets["G"](planes, self.latent(n, self.config.z_dim))

    def export_generator(self) -> TranslationExport:
        translator = LabelMapTranslator(self.nets["G"], self.config.z_dim if self.trains_encoder else 0)
        return TranslationExport(translator, (self.spec.map_classes, self.spec.image_size, self.spec.image_size),
                                 "label_map")
