"""SEAN (Zhu, Abdal, Qin & Wonka, CVPR 2020): SPADE with a style vector per semantic region.

Style encoder: a small encoder-decoder (two stride-2 convolutions down, one
transposed convolution up, tanh; the paper's bottleneck network) maps the
reference image to style_dim feature planes at half resolution, and
region-wise average pooling under each class's mask of the reference's label
map gives the style matrix ST, N x M x style_dim: one style vector per class.
A class absent from the reference pools to a zero vector.

Region-adaptive normalisation (the SEAN block, the official code's ``ACE``):
per-pixel Gaussian noise (one draw per pixel, shared by the channels) times a
learned per-channel scale (zero at init, as the official code) is added to x,
then a parameter-free batch norm. Two modulations are blended:
(a) style: every class's style vector through its own fully connected layer
and ReLU (each normalisation layer has its own per-class layers), broadcast by
the target label map (each pixel gets its class's vector), then two 3 x 3
convolutions give gamma_s and beta_s; (b) mask: SPADE's convolutions on the
label map give gamma_o and beta_o (``components.nets.spade.SPADE`` provides
this half and the parameter-free norm). gamma = a_g gamma_s + (1 - a_g)
gamma_o, beta likewise with a_b, where a = sigmoid(learned logit), 0 at init
(a = 0.5), as the official code; out = BN(x) (1 + gamma) + beta.

Generator: a 3 x 3 convolution of the label map downsampled to 4 x 4 (SPADE's
deterministic start), then one SEAN residual block per resolution (SPADE's
block with its three normalisations made region-adaptive), 2x nearest
upsampling between them, then leaky ReLU, a 3 x 3 convolution and tanh. The
last block uses the mask half only, as the official generator's ``up_3``
(``use_rgb=False``); it still adds noise. The style matrix is computed once
per forward from (exemplar image, exemplar label map). The style encoder lives
inside G and is trained by G's optimizer in the G phase.

Training, the paper's reconstruction setting: the exemplar is the target image
itself with its own label map. D: a two-scale spectral-norm PatchGAN with
instance norm on concat(one-hot map, image), hinge loss (real and fake in one
forward, as SPADE's code). G: hinge adversarial + 10 x discriminator feature
matching + ``lambda_l1`` x L1 reconstruction. The paper's VGG-19 perceptual
loss (weight 10) is replaced by pixel L1: no pretrained weights are
downloaded. Adam lr 1e-4 (G) and 4e-4 (D), betas (0, 0.999) (TTUR, as the paper).

Generation: ``condition_of`` pairs each layout with the previous row's image
and label map (style transfer from another image). A target class the
exemplar lacks takes the per-class mean style that G tracks over training
(an EMA of the style matrix, updated in each G phase); a plain label-map
tensor (no exemplar) takes the mean style for every class. ``transfer_styles``
takes chosen classes' styles from a reference and the rest from a base image.
Noise is drawn in ``generate`` (the paper keeps it at test time); the
exported generator leaves it out, so it is deterministic.

Deviations for 32 px on CPU, beside the VGG loss: style_dim 16 (paper 512),
encoder and SPADE hidden widths 16 (paper: 32 doubling to 128, and 128), generator widths
8..32 (paper 64..1024) and one block per resolution (the paper adds two more
at the start resolution); the reference's mask is area-downsampled to the
encoder's half resolution (weights = the fraction of each feature pixel a class
covers) instead of nearest-downsampled, so a class no wider than a pixel still
gets its style.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (DataSpec, ExemplarCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, one_hot_maps, rank_mean, unwrap)
from components.nets.patchgan import MultiScaleDiscriminator
from components.nets.spade import SPADE, frozen_spectral_norm, spectral_norms_folded, upsampling_plan


# --- pure functions of the method -----------------------------------------------------------------


def region_average_pool(features: Tensor, masks: Tensor) -> Tensor:
    """N x S x h x w features, N x M x h x w non-negative mask weights -> N x M x S region means.

    Row m of sample n is the mask-weighted mean of the features over class m's
    region; a class with no weight in a sample (absent from it) gets zeros, not 0/0.
    """
    sums = torch.einsum("nshw,nmhw->nms", features, masks)
    areas = masks.sum(dim=(2, 3)).unsqueeze(2)
    return sums / torch.where(areas > 0, areas, torch.ones_like(areas))


def class_style_map(target_maps: Tensor, class_styles: Tensor) -> Tensor:
    """One-hot N x M x H x W layout, N x M x S styles -> N x S x H x W: each pixel gets its class's vector."""
    n, m, h, w = target_maps.shape
    return torch.bmm(class_styles.transpose(1, 2), target_maps.reshape(n, m, h * w)).view(n, -1, h, w)


def blend(style_part: Tensor, mask_part: Tensor, alpha: Tensor) -> Tensor:
    """alpha * style_part + (1 - alpha) * mask_part: SEAN's mix of its two modulations."""
    return alpha * style_part + (1 - alpha) * mask_part


# --- networks -------------------------------------------------------------------------------------


class StyleEncoder(nn.Module):
    """Image N x C x H x W -> N x style_dim x H/2 x W/2 features (the paper's bottleneck encoder-decoder)."""

    def __init__(self, channels: int, style_dim: int, width: int):
        super().__init__()

        def stage(conv: nn.Module, cout: int) -> list[nn.Module]:
            return [conv, nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(
            *stage(nn.Conv2d(channels, width, 3, padding=1), width),
            *stage(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), 2 * width),
            *stage(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), 4 * width),
            *stage(nn.ConvTranspose2d(4 * width, 2 * width, 3, stride=2, padding=1, output_padding=1), 2 * width),
            nn.Conv2d(2 * width, style_dim, 3, padding=1), nn.Tanh())

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class RegionAdaptiveNorm(nn.Module):
    """SEAN's normalisation: BN(x + noise) (1 + gamma) + beta, gamma and beta blended from styles and mask.

    ``styled=False`` keeps the mask half only (the official generator's last block).
    """

    def __init__(self, channels: int, map_classes: int, style_dim: int, hidden: int, styled: bool = True):
        super().__init__()
        self.styled = styled
        self.noise_scale = nn.Parameter(torch.zeros(channels))
        self.mask = SPADE(channels, map_classes, hidden)  # its param-free BN and its gamma_o, beta_o convs
        if styled:
            bound = style_dim ** -0.5  # nn.Linear's default range, per class
            self.class_weight = nn.Parameter(torch.empty(map_classes, style_dim, style_dim).uniform_(-bound, bound))
            self.class_bias = nn.Parameter(torch.empty(map_classes, style_dim).uniform_(-bound, bound))
            # gamma_s's and beta_s's 3 x 3 convolutions as one of 2 x channels outputs: the same map, one call
            self.style_gamma_beta = nn.Conv2d(style_dim, 2 * channels, 3, padding=1)
            self.blend_gamma_logit = nn.Parameter(torch.zeros(1))
            self.blend_beta_logit = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, target_maps: Tensor, class_styles: Tensor, noise: bool = True) -> Tensor:
        if noise:
            draws = torch.randn(x.size(0), 1, x.size(2), x.size(3), dtype=x.dtype, device=x.device)
            x = x + draws * self.noise_scale.view(1, -1, 1, 1)
        gamma, beta = self.modulation(target_maps, class_styles, x.shape[-2:])
        return self.mask.norm(x) * (1 + gamma) + beta

    def modulation(self, target_maps: Tensor, class_styles: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The blended (gamma, beta) at ``size``, N x channels x H x W each."""
        gamma_o, beta_o = self.mask.modulation(target_maps, size)
        if not self.styled:
            return gamma_o, beta_o
        gamma_s, beta_s = self.style_modulation(target_maps, class_styles, size)
        return (blend(gamma_s, gamma_o, torch.sigmoid(self.blend_gamma_logit)),
                blend(beta_s, beta_o, torch.sigmoid(self.blend_beta_logit)))

    def style_modulation(self, target_maps: Tensor, class_styles: Tensor,
                         size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(gamma_s, beta_s): per-class fc + ReLU, broadcast by the layout at ``size``, then the 3 x 3 convs."""
        projected = F.relu(torch.einsum("nms,mst->nmt", class_styles, self.class_weight) + self.class_bias)
        style_map = class_style_map(F.interpolate(target_maps, size=size, mode="nearest"), projected)
        gamma_s, beta_s = self.style_gamma_beta(style_map).chunk(2, dim=1)
        return gamma_s, beta_s


class SEANResBlock(nn.Module):
    """SPADE's residual block with region-adaptive normalisations: norm -> leaky ReLU -> conv, twice."""

    def __init__(self, cin: int, cout: int, map_classes: int, style_dim: int, hidden: int, styled: bool = True):
        super().__init__()
        middle = min(cin, cout)

        def norm(channels: int) -> RegionAdaptiveNorm:
            return RegionAdaptiveNorm(channels, map_classes, style_dim, hidden, styled)

        self.norm_0, self.conv_0 = norm(cin), spectral_norm(nn.Conv2d(cin, middle, 3, padding=1))
        self.norm_1, self.conv_1 = norm(middle), spectral_norm(nn.Conv2d(middle, cout, 3, padding=1))
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s, self.conv_s = norm(cin), spectral_norm(nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: Tensor, target_maps: Tensor, class_styles: Tensor, noise: bool = True) -> Tensor:
        shortcut = (self.conv_s(self.norm_s(x, target_maps, class_styles, noise)) if self.learned_shortcut else x)
        h = self.conv_0(F.leaky_relu(self.norm_0(x, target_maps, class_styles, noise), 0.2))
        h = self.conv_1(F.leaky_relu(self.norm_1(h, target_maps, class_styles, noise), 0.2))
        return shortcut + h


class SEANGenerator(nn.Module):
    """G(target one-hot map, exemplar image, exemplar one-hot map) -> image in [-1, 1].

    ``style_mean`` (M x style_dim) is the per-class mean style tracked over
    training: what a target class gets when the exemplar lacks it.
    """

    def __init__(self, map_classes: int, channels: int, image_size: int, width: int, style_dim: int,
                 encoder_width: int, hidden: int, max_width_mult: int = 4):
        super().__init__()
        self.map_classes, self.style_dim = map_classes, style_dim
        self.style_encoder = StyleEncoder(channels, style_dim, encoder_width)
        self.start, ups = upsampling_plan(image_size)
        widths = [width * min(2 ** (ups - i), max_width_mult) for i in range(ups + 1)]
        self.head = nn.Conv2d(map_classes, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            SEANResBlock(a, b, map_classes, style_dim, hidden, styled=k < ups)
            for k, (a, b) in enumerate(zip([widths[0]] + widths[:-1], widths)))
        self.to_image = nn.Conv2d(widths[-1], channels, 3, padding=1)
        self.register_buffer("style_mean", torch.zeros(map_classes, style_dim))
        self.register_buffer("style_mean_updates", torch.zeros(map_classes))

    def forward(self, target_maps: Tensor, exemplars: Tensor, exemplar_maps: Tensor, noise: bool = True,
                return_styles: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        styles, present = self.encode_styles(exemplars, exemplar_maps)
        images = self.synthesize(target_maps, self.fill_absent(styles, present), noise)
        return (images, styles, present) if return_styles else images

    def encode_styles(self, exemplars: Tensor, exemplar_maps: Tensor) -> tuple[Tensor, Tensor]:
        """The style matrix N x M x S of the exemplars, and N x M: whether each class is in each exemplar."""
        features = self.style_encoder(exemplars)
        weights = F.interpolate(exemplar_maps, size=features.shape[-2:], mode="area")
        return region_average_pool(features, weights), weights.sum(dim=(2, 3)) > 0

    def fill_absent(self, styles: Tensor, present: Tensor) -> Tensor:
        """Styles with each absent class's (zero) row replaced by that class's tracked mean style."""
        return torch.where(present.unsqueeze(2), styles, self.style_mean.unsqueeze(0).to(styles.dtype))

    def mean_styles(self, n: int) -> Tensor:
        """The tracked mean style matrix for n samples."""
        return self.style_mean.unsqueeze(0).expand(n, -1, -1)

    def synthesize(self, target_maps: Tensor, class_styles: Tensor, noise: bool = True) -> Tensor:
        """The image of the one-hot layout with the given style matrix."""
        x = self.head(F.interpolate(target_maps, size=(self.start, self.start), mode="nearest"))
        for k, block in enumerate(self.blocks):
            if k > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, target_maps, class_styles, noise)
        return self.to_image(F.leaky_relu(x, 0.2)).tanh()

    @torch.no_grad()
    def update_style_mean(self, style_sums: Tensor, counts: Tensor, decay: float) -> None:
        """Move each seen class's mean towards this batch's mean (M x S sums over M counts).

        The rate is max(1 - decay, 1 / (updates + 1)): the first updates
        average exactly, so the mean does not start biased towards zero.
        """
        seen = counts > 0
        batch_mean = style_sums / counts.clamp(min=1e-12).unsqueeze(1)
        rate = torch.maximum(torch.full_like(counts, 1 - decay), 1 / (self.style_mean_updates + 1))
        rate = torch.where(seen, rate, torch.zeros_like(rate)).unsqueeze(1)
        self.style_mean.add_(rate * (batch_mean - self.style_mean))
        self.style_mean_updates.add_(seen.to(self.style_mean_updates.dtype))


def patch_map_sizes(image_size: int, scales: int, layers: int) -> list[int]:
    """Side of the logit map of each scale of ``MultiScaleDiscriminator`` (k4 s2 p1 convs, then two k4 s1 p1)."""
    sizes, size = [], image_size
    for k in range(scales):
        if k > 0:
            size = (size + 1) // 2  # avg_pool2d(3, stride 2, padding 1)
        side = size
        for _ in range(layers):
            side //= 2
        sizes.append(side - 2)
    return sizes


# --- the family -----------------------------------------------------------------------------------


@dataclass
class SEANConfig:
    # widths sized for one CPU thread at 32 px (see the module docstring for the paper's)
    g_width: int = 8  # channels of G's last block; doubling toward the 4 x 4 start, at most x4
    style_dim: int = 16  # length of each region's style vector (paper: 512)
    encoder_width: int = 16  # style encoder's first width (x2, x4 in the bottleneck)
    mask_hidden: int = 16  # hidden channels of the mask (SPADE) half of each normalisation (paper: 128)
    d_width: int = 16
    d_layers: int = 2  # stride-2 layers per PatchGAN (paper: 4 at 256 px; 2 leaves 6 x 6 and 2 x 2 logits at 32 px)
    d_scales: int = 2  # as the paper
    lambda_fm: float = 10.0  # as the paper
    # Stand-in for the paper's VGG loss (weight 10). Pixel L1 pulls towards the mean colour of what D cannot tell
    # apart, so it blurs more than VGG at the same weight; 5 keeps it (about 2.5 at the start) below FM's
    # 10 x FM (about 12) and the adversarial term. On a 384-image shapes-like set (a random colour per region), 200
    # steps at batch 32 gave reconstruction L1 0.413 / 0.405 / 0.397 and exemplar-to-output region colour
    # correlation 0.35 / 0.38 / 0.38 for weights 1 / 5 / 10: within one run's noise, so the middle one.
    lambda_l1: float = 5.0
    style_mean_decay: float = 0.99  # EMA of the per-class mean style used for classes an exemplar lacks
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999

    def __post_init__(self) -> None:
        if not 0.0 <= self.style_mean_decay < 1.0:
            raise ValueError(f"style_mean_decay must be in [0, 1), got {self.style_mean_decay}")
        if self.d_scales < 1 or self.d_layers < 1:
            raise ValueError(f"d_scales and d_layers must be >= 1, got {self.d_scales} and {self.d_layers}")


@register
class SEAN(Family):
    name = "sean"
    task = TaskKind.SEGMENTATION_TO_IMAGE
    paper = ("Zhu et al., SEAN: Image Synthesis with Semantic Region-Adaptive Normalization, CVPR 2020 "
             "(arXiv:1911.12861)")
    Config = SEANConfig
    tiny = {"g_width": 2, "style_dim": 4, "encoder_width": 2, "mask_hidden": 4, "d_width": 4, "d_layers": 1}

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        smallest = min(patch_map_sizes(spec.image_size, cfg.d_scales, cfg.d_layers))
        if smallest < 1:
            raise ConfigError(f"family {self.name}: d_layers={cfg.d_layers} and d_scales={cfg.d_scales} leave no "
                              f"patch logits at {spec.image_size} px; lower them")
        return {"G": SEANGenerator(spec.map_classes, spec.channels, spec.image_size, cfg.g_width, cfg.style_dim,
                                   cfg.encoder_width, cfg.mask_hidden),
                "D": MultiScaleDiscriminator(spec.map_classes + spec.channels, cfg.d_scales, cfg.d_width,
                                             cfg.d_layers, norm="instance", spectral=True)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        return {"G": torch.optim.Adam(self.nets["G"].parameters(), self.config.lr_g, betas=betas),
                "D": torch.optim.Adam(self.nets["D"].parameters(), self.config.lr_d, betas=betas)}

    def phases(self) -> list[Phase]:
        # G reuses D's batch, as the paper's code steps both on one: its exemplars, L1 and FM targets are that
        # batch's real images
        return [Phase("D", ("D",), self.discriminator_loss),
                Phase("G", ("G",), self.generator_loss, uses_data=False)]

    def target_maps(self, label_maps: Tensor) -> Tensor:
        return one_hot_maps(label_maps, self.spec.map_classes)

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """Hinge loss of each scale on concat(map, image), averaged; real and fake in one D forward."""
        maps = self.target_maps(batch.label_maps)
        # reconstruction: the exemplar is the target itself. G's spectral norms advance in G's phase only
        with torch.no_grad(), frozen_spectral_norm(nets["G"]):
            fake = nets["G"](maps, batch.images, maps)
        pairs = torch.cat([torch.cat([maps, batch.images], 1), torch.cat([maps, fake], 1)])
        logits = [scale[-1] for scale in nets["D"](pairs)]
        n = len(batch)
        real_logits, fake_logits = [x[:n] for x in logits], [x[n:] for x in logits]
        loss = losses.multiscale_mean(real_logits, losses.hinge_discriminator_loss, fake_logits)
        return loss, {"d_loss": loss.item(),
                      "d_real_logit": torch.stack([x.mean() for x in real_logits]).mean().item(),
                      "d_fake_logit": torch.stack([x.mean() for x in fake_logits]).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        """Hinge adversarial + lambda_fm feature matching + lambda_l1 L1 (the VGG term's stand-in)."""
        cfg, maps = self.config, self.target_maps(batch.label_maps)
        fake, styles, present = nets["G"](maps, batch.images, maps, return_styles=True)
        with frozen_spectral_norm(nets["D"]):
            fake_features = nets["D"](torch.cat([maps, fake], 1))
            with torch.no_grad():
                real_features = nets["D"](torch.cat([maps, batch.images], 1))
        g_adv = losses.multiscale_mean([scale[-1] for scale in fake_features], losses.hinge_generator_loss)
        g_fm = losses.feature_matching_loss(real_features, fake_features)
        g_l1 = losses.l1_reconstruction_loss(fake, batch.images)
        self.track_style_mean(unwrap(nets["G"]), styles.detach(), present)
        loss = g_adv + cfg.lambda_fm * g_fm + cfg.lambda_l1 * g_l1
        return loss, {"g_loss": loss.item(), "g_adv": g_adv.item(), "g_fm": g_fm.item(), "g_l1": g_l1.item()}

    def track_style_mean(self, generator: SEANGenerator, styles: Tensor, present: Tensor) -> None:
        """Update G's per-class mean style from this batch, summed over data-parallel ranks first."""
        weights = present.to(styles.dtype)
        sums = rank_mean(torch.einsum("nm,nms->ms", weights, styles))
        counts = rank_mean(weights.sum(dim=0))
        generator.update_style_mean(sums, counts, self.config.style_mean_decay)

    def condition_of(self, batch: ImageBatch) -> ExemplarCondition:
        """Each layout with the previous row's image and label map as its exemplar: style from another image."""
        return ExemplarCondition(batch.label_maps, torch.roll(batch.images, 1, 0), torch.roll(batch.label_maps, 1, 0))

    @torch.no_grad()
    def generate(self, n: int, condition: ExemplarCondition | Tensor | None = None) -> Tensor:
        """n images of label maps: with an ExemplarCondition, in the exemplars' region styles; with a plain
        N x H x W label-map tensor, every class in its tracked mean style."""
        generator: SEANGenerator = unwrap(self.nets["G"])
        if isinstance(condition, ExemplarCondition):
            self._check_count(len(condition), n)
            condition = condition.to(self.device)
            return generator(self.target_maps(condition.label_maps), condition.exemplars,
                             self.target_maps(condition.exemplar_label_maps))
        if isinstance(condition, Tensor):
            self._check_count(condition.size(0), n)
            return generator.synthesize(self.target_maps(condition.to(self.device)), generator.mean_styles(n))
        raise DataError(f"family {self.name} generates from label maps: pass an ExemplarCondition or an "
                        f"N x H x W label-map tensor, not {type(condition).__name__}")

    @torch.no_grad()
    def transfer_styles(self, label_maps: Tensor, exemplar: Tensor, exemplar_label_maps: Tensor, regions: list[int],
                        base_images: Tensor | None = None) -> Tensor:
        """Images of ``label_maps`` whose classes in ``regions`` take the reference's styles.

        The other classes take the styles of ``base_images`` (the images whose
        layouts ``label_maps`` are), or the tracked mean styles without them. A
        listed class the reference lacks keeps its base style. A single
        reference (batch 1) serves every layout.
        """
        generator: SEANGenerator = unwrap(self.nets["G"])
        m, device = self.spec.map_classes, self.device
        outside = [c for c in regions if not 0 <= c < m]
        if outside:
            raise DataError(f"transfer_styles: regions {outside} are not classes of this model (0..{m - 1})")
        targets = self.target_maps(label_maps.to(device))
        n = targets.size(0)
        reference_maps = self.target_maps(exemplar_label_maps.to(device)).expand(n, -1, -1, -1)
        reference, reference_present = generator.encode_styles(exemplar.to(device).expand(n, -1, -1, -1),
                                                               reference_maps)
        if base_images is None:
            base = generator.mean_styles(n)
        else:
            base = generator.fill_absent(*generator.encode_styles(base_images.to(device), targets))
        listed = torch.zeros(m, dtype=torch.bool, device=device)
        for c in regions:
            listed[c] = True
        take = (listed.unsqueeze(0) & reference_present).unsqueeze(2)
        return generator.synthesize(targets, torch.where(take, reference, base))

    def _check_count(self, count: int, n: int) -> None:
        if count != n:
            raise DataError(f"generate: {count} conditions for {n} images")

    def export_generator(self) -> "SEANExport":
        """A snapshot of G in eval mode, its spectral norms folded into plain weights (the eval forward's own)."""
        snapshot = spectral_norms_folded(unwrap(self.nets["G"])).eval()
        return SEANExport(ExemplarTranslator(snapshot, self.spec.map_classes, self.spec.channels), self.spec).eval()


class ExemplarTranslator(nn.Module):
    """One tensor [target one-hot (M) | exemplar image (C) | exemplar one-hot (M)] -> image, without noise."""

    def __init__(self, generator: SEANGenerator, map_classes: int, channels: int):
        super().__init__()
        self.generator, self.map_classes, self.channels = generator, map_classes, channels

    def forward(self, inputs: Tensor) -> Tensor:
        m, c = self.map_classes, self.channels
        return self.generator(inputs[:, :m], inputs[:, m:m + c], inputs[:, m + c:], noise=False)


class SEANExport(TranslationExport):
    """The registry's SEAN: ``condition_kind`` "exemplar", M + C + M channels (layout, reference, its layout)."""

    def __init__(self, translator: ExemplarTranslator, spec: DataSpec):
        m, c, s = spec.map_classes, spec.channels, spec.image_size
        super().__init__(translator, (2 * m + c, s, s), "exemplar")
        self.map_classes, self.channels = m, c

    def inputs(self, label_maps: Tensor, exemplars: Tensor, exemplar_label_maps: Tensor) -> Tensor:
        """The export's input tensor of an ExemplarCondition's parts."""
        return torch.cat([one_hot_maps(label_maps, self.map_classes), exemplars,
                          one_hot_maps(exemplar_label_maps, self.map_classes)], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random layouts, images in [-1, 1] and their layouts."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        layouts = torch.randint(self.map_classes, (2, n, height, width), generator=g)
        exemplars = torch.rand(n, self.channels, height, width, generator=g) * 2 - 1
        return self.inputs(layouts[0], exemplars, layouts[1])
