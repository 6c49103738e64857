"""CoCosNet (Zhang et al., CVPR 2020): a label map drawn in an exemplar's appearance via a learnt correspondence.

Correspondence network. Two domain adaptors map the one-hot label map x_A
(F_A) and an image (F_B) into a shared domain S at a quarter of the image
side (8 x 8 = 64 positions at 32 px), each position's feature vector
L2-normalised; a shared pair of convolutions then gives the matching features.
Each position's matching vector is centred on its own channel mean and
L2-normalised, so M(u, v) = x_S(u)^T y_S(v) / (|x_S(u)| |y_S(v)|) is a cosine
similarity; the exemplar y, average-pooled to the same grid, is warped to the
layout by r_{y->x}(u) = sum_v softmax_v(alpha M(u, v)) y(v), alpha = 100.

Translation network. SPADE-style residual blocks whose every normalisation
is positional (PONO: each pixel's activations normalised over channels, the
paper's choice, which keeps the spatial structure the exemplar modulates) and
whose gamma and beta come from convolutions of the warped exemplar alone,
upsampled bilinearly to the image. It starts from the label map downsampled
to the correspondence grid (the paper starts from a constant code: at 32 px
a constant 8 x 8 start would leave the layout to the 8 x 8 warped exemplar
alone); one block at the grid, one per doubling below the image size, and at
full resolution the output convolution reads the features beside the warped
exemplar and the one-hot label map (``output_sees_label_map``: the layout's
edges at pixel precision). The official code's default also puts the label
map into every SPADE modulation (``CBN_intype warp_mask``); on shapes (two
seeds, 500 steps at batch 32) neither choice was consistently better: the
warped exemplar's L1 to the ground truth's 8 x 8 image ended at 0.17-0.26
and the output's L1 at 0.19-0.25 with either, so the paper's is kept.

Training exemplars. With probability ``self_reference_probability`` (0.7, the
official code's real-reference probability) an image's exemplar is its own
ground truth under a random flip, shift, rotation and scale (``F.affine_grid``
/ ``F.grid_sample``; its label map moved by the same grid): a pseudo exemplar
pair, for which the ground truth is a valid target. Otherwise it is the next
image of the batch (as ``condition_of`` pairs them at evaluation).

Losses of G (F_A, F_B and the translator are one module), each from the paper:

* domain alignment, || F_A(x_A) - F_B(x_B) ||_1 between the label map's and
  its own ground truth's shared-domain features (weight 10);
* exemplar translation: a perceptual loss at a high feature layer between
  the output and the ground truth x_B (weight 1, see the config) and the
  contextual loss (Mechrez et al. 2018) at lower layers between the output and
  the exemplar y (weight 10);
* correspondence regularisation: || r_{y->x->y} - y ||_1, the exemplar warped
  to the layout and back with the softmax of the transposed correlation (1);
* hinge adversarial loss over a two-scale PatchGAN on concat(one-hot map,
  image) (10), with pix2pixHD feature matching of D's activations (10).
  The paper's pseudo-pair feature matching L_feat (VGG activations of the
  output against the ground truth) is that same term here: its features are
  D's, and the ground truth is the real pair D sees.

Feature source. The paper's perceptual and contextual losses use a VGG-19
pretrained on ImageNet (and its own domain classifier); no pretrained
network may be downloaded here, and a small frozen random network describes
images poorly. ``feature_layers`` gives the feature maps both losses read,
shallow to deep: 3 x 3 pixel patches of the image at half resolution (a fixed,
parameter-free feature for the contextual loss) and then D's first-scale
intermediate activations on concat(layout, image), the real or exemplar side
detached (pix2pixHD's feature matching). The perceptual loss reads the
deepest, the contextual loss all the others. D's features move as D trains:
they describe what D has learnt to tell apart, not a fixed embedding.
``feature_layers`` is the one place to point at a trained feature extractor
(a domain classifier of the data set) when one exists.

Optimisation as the paper: Adam, lr 1e-4 for G and 4e-4 for D (TTUR), betas
(0, 0.999). Left out: the official code's warped-mask loss and its non-local
blocks, exemplar retrieval by image similarity (the other exemplars are just
another image of the batch), EMA of G.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from components import losses
from components.errors import ConfigError, DataError
from components.families import register
from components.families.base import (ExemplarCondition, Family, ImageBatch, LossResult, Networks, Phase,
                                      TaskKind, TranslationExport, one_hot_maps, unwrap)
from components.nets.patchgan import MultiScaleDiscriminator
from components.nets.spade import SPADE, SPADEResBlock, frozen_spectral_norm, spectral_norms_folded

# --- correspondence and exemplar-translation losses (pure functions) -----------------------------


def centred_unit_features(features: Tensor) -> Tensor:
    """N x D x H x W -> N x HW x D: each position's vector minus its channel mean, then L2-normalised."""
    flat = features.flatten(2).transpose(1, 2)
    return F.normalize(flat - flat.mean(dim=2, keepdim=True), dim=2)


def correspondence_softmax(features_a: Tensor, features_b: Tensor, temperature: float) -> Tensor:
    """N x HW_a x HW_b attention: row u is softmax_v(temperature * M(u, v)), M the centred cosine similarity."""
    correlation = centred_unit_features(features_a) @ centred_unit_features(features_b).transpose(1, 2)
    return torch.softmax(temperature * correlation, dim=2)


def warp(attention: Tensor, values: Tensor) -> Tensor:
    """r(u) = sum_v attention(u, v) values(v): values N x C x h x w warped onto the attention's rows' grid.

    The rows' grid is taken to have the values' height and width (CoCosNet's
    two domains share one resolution).
    """
    n, c, h, w = values.shape
    warped = attention @ values.flatten(2).transpose(1, 2)  # N x HW x C
    return warped.transpose(1, 2).reshape(n, c, h, w)


def cycle_warp(attention_ab: Tensor, attention_ba: Tensor, values_b: Tensor) -> Tensor:
    """r_{b->a->b}: values of b warped onto a's grid, then back onto b's."""
    return warp(attention_ba, warp(attention_ab, values_b))


def correspondence_regularisation_loss(attention_ab: Tensor, attention_ba: Tensor, values_b: Tensor) -> Tensor:
    """|| r_{y->x->y} - y ||_1 (mean): a correspondence that warps the exemplar away and back keeps it."""
    return (cycle_warp(attention_ab, attention_ba, values_b) - values_b).abs().mean()


def domain_alignment_loss(layout_features: Tensor, image_features: Tensor) -> Tensor:
    """|| F_A(x_A) - F_B(x_B) ||_1 (mean) between each position's L2-normalised features of a layout and its image."""
    return (F.normalize(layout_features, dim=1) - F.normalize(image_features, dim=1)).abs().mean()


def contextual_loss(features_x: Tensor, features_y: Tensor, h: float = 0.5, eps: float = 1e-5) -> Tensor:
    """Mechrez et al.'s contextual loss -log CX(X, Y), batch mean; N x C x (any positions) feature maps.

    Both sets are centred on Y's mean feature and L2-normalised; d_ij is the
    cosine distance of x_i to y_j, d~_ij = d_ij / (min_k d_ik + eps), and
    A_ij = softmax_j((1 - d~_ij) / h). CX = mean_i max_j A_ij (CoCosNet's
    form: each output feature's best exemplar match). It compares sets, not
    positions: shuffling either set's positions leaves it unchanged, which
    is what lets an exemplar with another layout be a target. Identical sets
    of distinct features give CX = 1, the minimum loss 0.
    """
    n, c = features_x.shape[:2]
    x, y = features_x.reshape(n, c, -1), features_y.reshape(n, c, -1)
    centre = y.mean(dim=2, keepdim=True)
    x, y = F.normalize(x - centre, dim=1), F.normalize(y - centre, dim=1)
    distance = (1 - x.transpose(1, 2) @ y).clamp(min=0)  # N x P x Q; rounding can dip below 0
    relative = distance / (distance.min(dim=2, keepdim=True).values + eps)
    affinity = torch.softmax((1 - relative) / h, dim=2)
    similarity = affinity.max(dim=2).values.mean(dim=1)
    return -torch.log(similarity).mean()


def pixel_patches(images: Tensor, size: int = 3) -> Tensor:
    """N x C x H x W -> N x (C size^2) x H x W: each pixel's size x size neighbourhood as its feature vector."""
    n, _, h, w = images.shape
    return F.unfold(F.pad(images, [size // 2] * 4, mode="replicate"), size).view(n, -1, h, w)


def random_affine_grids(n: int, size: int, max_shift: float, max_rotation: float, max_scale: float,
                        flip: bool, device: torch.device) -> Tensor:
    """N x size x size x 2 sampling grids of random similarity transforms (and horizontal flips).

    Shift as a fraction of the image side, rotation in degrees, scale as
    1 +- max_scale; for ``F.grid_sample`` with ``align_corners=False``.
    """
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_rotation)
    scale = 1 + (torch.rand(n, device=device) * 2 - 1) * max_scale
    mirror = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * 2 * max_shift  # grid coordinates span 2 per side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
                         torch.stack([sin * mirror, cos, shift[:, 1]], dim=1)], dim=1)
    return F.affine_grid(theta, [n, 1, size, size], align_corners=False)


def pseudo_exemplars(images: Tensor, layout_planes: Tensor, grids: Tensor) -> tuple[Tensor, Tensor]:
    """Images (bilinear) and their one-hot layouts (nearest, so still one-hot) moved by the same grids."""
    moved = F.grid_sample(images, grids, mode="bilinear", padding_mode="border", align_corners=False)
    planes = F.grid_sample(layout_planes, grids, mode="nearest", padding_mode="border", align_corners=False)
    return moved, planes


# --- networks -------------------------------------------------------------------------------------


class PositionalNorm(nn.Module):
    """PONO (Li et al. 2019): each position's activations minus their channel mean, over their channel std."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=1, keepdim=True)  # two means, not torch.var: a reduction across channels is slow
        return centred * torch.rsqrt(centred.pow(2).mean(dim=1, keepdim=True) + self.eps)


def positional_spade_block(cin: int, cout: int, map_channels: int, hidden: int) -> SPADEResBlock:
    """A SPADE residual block whose normalisations are all positional (CoCosNet's translation network)."""
    block = SPADEResBlock(cin, cout, map_channels, hidden)  # spectral-norm convolutions, as SPADE's and CoCosNet's G
    for module in block.modules():
        if isinstance(module, SPADE):
            module.norm = PositionalNorm()
    return block


def _conv_norm_act(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1),
                         nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2))


class ResidualPair(nn.Module):
    """x + conv(act(norm(conv(x)))): the adaptors' residual block at the correspondence grid."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_norm_act(channels, channels, 3, 1), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DomainAdaptor(nn.Module):
    """F_{A->S} or F_{B->S}: an input -> N x feature_dim x H/stride x W/stride, each position L2-normalised.

    Stride-2 4 x 4 convolutions (instance norm, leaky ReLU), ``width`` channels
    then doubling, a residual 3 x 3 pair at the grid, then a 3 x 3 convolution
    into S. (The paper's adaptors also run full-resolution layers; at 32 px
    they would cost a fifth of an iteration on a CPU.)
    """

    def __init__(self, in_channels: int, width: int, feature_dim: int, stride: int):
        super().__init__()
        layers, channels = [], in_channels
        for k in range(int(math.log2(stride))):
            out = width * 2 ** k
            layers.append(_conv_norm_act(channels, out, 4, 2))
            channels = out
        layers += [ResidualPair(channels), nn.Conv2d(channels, feature_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)


class ExemplarTranslator(nn.Module):
    """The label map at the correspondence grid grown to an image, every block modulated by the warped exemplar.

    PONO-SPADE residual blocks, one at the grid and one per doubling below
    the image size, their gamma and beta computed from the warped exemplar
    alone (as the paper). At full resolution the output convolution reads the
    upsampled features beside the warped exemplar and, with
    ``output_sees_label_map``, the one-hot label map: the layout's edges at
    pixel precision, which the 8 x 8 warp cannot carry at 32 px. A SPADE block
    there would cost a third of a CPU iteration.
    """

    def __init__(self, map_classes: int, channels: int, image_size: int, stride: int, width: int, hidden: int,
                 output_sees_label_map: bool):
        super().__init__()
        self.start = image_size // stride
        self.output_sees_layout = output_sees_label_map
        self.head = nn.Conv2d(map_classes, width, 3, padding=1)
        # all blocks of one width: a narrowing block's learned shortcut (a third SPADE) costs more on a CPU
        # than the wider activations
        self.blocks = nn.ModuleList(positional_spade_block(width, width, channels, hidden)
                                    for _ in range(int(math.log2(stride))))
        self.to_image = nn.Conv2d(width + channels + (map_classes if output_sees_label_map else 0), channels, 3,
                                  padding=1)

    def forward(self, layout_planes: Tensor, warped: Tensor) -> Tensor:
        modulation = F.interpolate(warped, size=layout_planes.shape[-2:], mode="bilinear", align_corners=False)
        x = self.head(F.interpolate(layout_planes, size=(self.start, self.start), mode="nearest"))
        for k, block in enumerate(self.blocks):
            if k > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, modulation)
        x = [F.leaky_relu(F.interpolate(x, scale_factor=2, mode="nearest"), 0.2), modulation]
        if self.output_sees_layout:
            x.append(layout_planes)
        return self.to_image(torch.cat(x, dim=1)).tanh()


class CoCosNetGenerator(nn.Module):
    """G: the correspondence network (F_A, F_B, matching layers) and the translation network, one module.

    ``forward(layout_planes, exemplars)`` gives the images; with ``targets``
    (the ground truths, training) it gives a dict of everything the losses
    read: ``images``, ``warped`` (r_{y->x}), ``exemplar_grid`` (y at the
    correspondence grid), the attentions ``layout_to_exemplar`` (rows: layout
    positions) and ``exemplar_to_layout``, and the shared-domain features
    ``layout_domain`` and ``target_domain`` for the alignment loss. One
    forward keeps the module usable inside DistributedDataParallel.
    """

    def __init__(self, map_classes: int, channels: int, image_size: int, cfg: "CoCosNetConfig"):
        super().__init__()
        self.stride, self.temperature = cfg.correspondence_stride, cfg.correspondence_temperature
        self.layout_adaptor = DomainAdaptor(map_classes, cfg.adaptor_width, cfg.feature_dim, self.stride)
        self.image_adaptor = DomainAdaptor(channels, cfg.adaptor_width, cfg.feature_dim, self.stride)
        self.matching = nn.Sequential(nn.Conv2d(cfg.feature_dim, cfg.feature_dim, 3, padding=1),
                                      nn.InstanceNorm2d(cfg.feature_dim, affine=True), nn.LeakyReLU(0.2),
                                      nn.Conv2d(cfg.feature_dim, cfg.feature_dim, 3, padding=1))
        self.translator = ExemplarTranslator(map_classes, channels, image_size, self.stride, cfg.g_width,
                                             cfg.g_hidden, cfg.output_sees_label_map)

    def forward(self, layout_planes: Tensor, exemplars: Tensor, targets: Tensor | None = None) -> Tensor | dict:
        n = layout_planes.size(0)
        layout_domain = self.layout_adaptor(layout_planes)
        image_domain = self.image_adaptor(exemplars if targets is None else torch.cat([exemplars, targets]))
        layout_match = self.matching(layout_domain)
        exemplar_match = self.matching(image_domain[:n])
        attention = correspondence_softmax(layout_match, exemplar_match, self.temperature)
        exemplar_grid = F.avg_pool2d(exemplars, self.stride)
        warped = warp(attention, exemplar_grid)
        images = self.translator(layout_planes, warped)
        if targets is None:
            return images
        return {"images": images, "warped": warped, "exemplar_grid": exemplar_grid,
                "layout_to_exemplar": attention,
                "exemplar_to_layout": correspondence_softmax(exemplar_match, layout_match, self.temperature),
                "layout_domain": layout_domain, "target_domain": image_domain[n:]}


class LayoutAndExemplarTranslator(nn.Module):
    """One tensor in: concat(one-hot target map (M planes), exemplar image (C channels)) -> G's image."""

    def __init__(self, generator: CoCosNetGenerator, map_classes: int):
        super().__init__()
        self.generator, self.map_classes = generator, map_classes

    def forward(self, inputs: Tensor) -> Tensor:
        return self.generator(inputs[:, :self.map_classes], inputs[:, self.map_classes:])


class ExemplarTranslationExport(TranslationExport):
    """The registry's CoCosNet: inputs N x (M + C) x H x W, a one-hot layout then an exemplar in [-1, 1]."""

    def __init__(self, generator: CoCosNetGenerator, map_classes: int, channels: int, image_size: int):
        super().__init__(LayoutAndExemplarTranslator(generator, map_classes),
                         (map_classes + channels, image_size, image_size), "label_map_and_exemplar")
        self.map_classes, self.channels = map_classes, channels

    def inputs(self, label_maps: Tensor, exemplars: Tensor) -> Tensor:
        """The export's input tensor of an ExemplarCondition's layout and exemplars."""
        return torch.cat([one_hot_maps(label_maps, self.map_classes), exemplars], dim=1)

    def example_inputs(self, n: int = 8, seed: int = 0) -> Tensor:
        """Random one-hot layouts beside random exemplar images in [-1, 1]."""
        g = torch.Generator().manual_seed(seed)
        _, height, width = self.condition_shape
        layouts = torch.randint(self.map_classes, (n, height, width), generator=g)
        return self.inputs(layouts, torch.rand(n, self.channels, height, width, generator=g) * 2 - 1)


# --- the family ----------------------------------------------------------------------------------


@dataclass
class CoCosNetConfig:
    # correspondence at a quarter of the image side, as the paper (64 x 64 of 256 px): 8 x 8 at 32 px
    correspondence_stride: int = 4
    correspondence_temperature: float = 100.0  # alpha
    # Widths are far below the paper's (adaptors 64 -> 256 with residual blocks, S 256 channels, G from 1024
    # channels, SPADE hidden 128, D 64): these keep one iteration (G and D phases, batch 32, 32 x 32) near
    # 0.15 s of one CPU thread (median CPU time; pix2pix's 0.08 s, measured alongside in the same process).
    adaptor_width: int = 8  # F_A / F_B: channels after the first stride-2 layer, doubling per stride-2 layer
    feature_dim: int = 32  # channels of the shared domain S
    g_width: int = 16  # the translator's blocks (8 saves only 0.01 s)
    g_hidden: int = 16  # SPADE's hidden convolution
    output_sees_label_map: bool = True
    d_width: int = 16  # 32 costs a third more per iteration (D runs five times in one)
    # one stride-2 layer per PatchGAN: 16 px patches at 32 px, and the half-scale D sees the whole image
    d_layers: int = 1
    d_scales: int = 2
    # pseudo exemplar pairs: probability of the own ground truth as exemplar, and its random transform
    self_reference_probability: float = 0.7
    exemplar_shift: float = 0.1  # of the image side
    exemplar_rotation: float = 15.0  # degrees
    exemplar_scale: float = 0.1
    exemplar_flip: bool = True
    # Loss weights: the official code's (its adversarial weight is 10; hinge D loss unweighted, as Adam
    # makes D's scale moot). Its perceptual weight (0.01, 0.001 in its README's runs) scales the MSE of
    # VGG relu5_2 or 4_2 activations; here the perceptual L1 of D's activations is 0.4-0.6 in training,
    # and 1 keeps it a minor term beside the feature matching that already covers that layer.
    adversarial_weight: float = 10.0
    feature_matching_weight: float = 10.0  # pix2pixHD lambda, also the paper's pseudo-pair L_feat
    perceptual_weight: float = 1.0
    contextual_weight: float = 10.0  # summed over the contextual layers, as the official code
    contextual_bandwidth: float = 0.1  # h, the official code's (contextual_loss defaults to 0.5)
    alignment_weight: float = 10.0
    regularisation_weight: float = 1.0  # cycle warping (the official edge-to-face setting; 0.1 for masks)
    g_lr: float = 1e-4
    d_lr: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999


@register
class CoCosNet(Family):
    name = "cocosnet"
    task = TaskKind.SEGMENTATION_TO_IMAGE
    paper = ("Zhang et al., Cross-domain Correspondence Learning for Exemplar-based Image Translation, "
             "CVPR 2020 (arXiv:2004.05571)")
    Config = CoCosNetConfig
    tiny = {"adaptor_width": 4, "feature_dim": 8, "g_width": 4, "g_hidden": 4, "d_width": 4}
    _generated: tuple[Tensor, Tensor] | None = None  # (label maps, images) of the last G phase, for the D phase

    def build_networks(self) -> dict[str, nn.Module]:
        spec, cfg = self.spec, self.config
        stride = cfg.correspondence_stride
        if stride not in (2, 4, 8) or spec.image_size % stride or spec.image_size // stride < 4:
            raise ConfigError(f"{self.name}.correspondence_stride must be 2, 4 or 8, divide the image size and leave "
                              f"a grid of at least 4 x 4; got {stride} at {spec.image_size} px")
        if not 0 <= cfg.self_reference_probability <= 1:
            raise ConfigError(f"{self.name}.self_reference_probability must lie in [0, 1]; "
                              f"got {cfg.self_reference_probability}")
        return {"G": CoCosNetGenerator(spec.map_classes, spec.channels, spec.image_size, cfg),
                "D": MultiScaleDiscriminator(spec.map_classes + spec.channels, cfg.d_scales, cfg.d_width,
                                             cfg.d_layers)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg, betas = self.config, (self.config.beta1, self.config.beta2)
        return {"G": torch.optim.Adam(self.nets["G"].parameters(), cfg.g_lr, betas=betas),
                "D": torch.optim.Adam(self.nets["D"].parameters(), cfg.d_lr, betas=betas)}

    def phases(self) -> list[Phase]:
        # the official code's order: G steps, then D judges the images of that same G pass, on the same batch
        return [Phase("G", ("G",), self.generator_loss), Phase("D", ("D",), self.discriminator_loss, uses_data=False)]

    def planes(self, label_maps: Tensor) -> Tensor:
        return one_hot_maps(label_maps, self.spec.map_classes)

    def training_exemplars(self, images: Tensor, layout_planes: Tensor) -> tuple[Tensor, Tensor]:
        """(exemplars, their one-hot layouts): per row, its own image moved at random (a pseudo exemplar pair)
        with probability ``self_reference_probability``, else the next row's image and layout."""
        cfg, n = self.config, images.size(0)
        grids = random_affine_grids(n, images.size(-1), cfg.exemplar_shift, cfg.exemplar_rotation,
                                    cfg.exemplar_scale, cfg.exemplar_flip, images.device)
        own_images, own_planes = pseudo_exemplars(images, layout_planes, grids)
        own = (torch.rand(n, device=images.device) < cfg.self_reference_probability).view(n, 1, 1, 1)
        return (torch.where(own, own_images, torch.roll(images, 1, 0)),
                torch.where(own, own_planes, torch.roll(layout_planes, 1, 0)))

    @staticmethod
    def discriminate(nets: Networks, layout_planes: Tensor, images: Tensor) -> list[list[Tensor]]:
        """Every scale's activations for the pairs (layout, image); the last of each list is the patch logits."""
        return nets["D"](torch.cat([layout_planes, images], dim=1))

    def feature_layers(self, images: Tensor, layout_planes: Tensor, nets: Networks,
                       discriminator_features: list[Tensor] | None = None) -> list[Tensor]:
        """The feature maps, shallow to deep, that the perceptual (deepest) and contextual (the rest) losses compare.

        3 x 3 pixel patches at half resolution, then D's first-scale
        activations on (layout, image) without its logits;
        ``discriminator_features`` passes them when the caller already ran D.
        Point this method at a trained feature extractor to replace the source
        (it may ignore the layout).
        """
        if discriminator_features is None:
            discriminator_features = self.discriminate(nets, layout_planes, images)[0]
        return [pixel_patches(F.avg_pool2d(images, 2))] + list(discriminator_features[:-1])

    def on_grid(self, features: Tensor) -> Tensor:
        """Features average-pooled to the correspondence grid: the contextual loss's N x P x P affinities cost
        P^2, and the official code pools its shallower VGG layers for the same reason."""
        grid = self.spec.image_size // self.config.correspondence_stride
        return F.adaptive_avg_pool2d(features, grid) if features.size(-1) > grid else features

    def generated_for(self, batch: ImageBatch, nets: Networks, layout: Tensor) -> Tensor:
        """The G phase's images of this batch (detached) when it made them, else a fresh no-grad G pass.

        Reusing them, as the official code does, spares a third of a CPU
        iteration; they come from G before its step.
        """
        generated, self._generated = self._generated, None
        if generated is not None and generated[0] is batch.label_maps:
            return generated[1]
        with torch.no_grad(), frozen_spectral_norm(nets["G"]):
            exemplars, _ = self.training_exemplars(batch.images, layout)
            return nets["G"](layout, exemplars)

    def discriminator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        layout = self.planes(batch.label_maps)
        fake = self.generated_for(batch, nets, layout)
        real_logits = [scale[-1] for scale in self.discriminate(nets, layout, batch.images)]
        fake_logits = [scale[-1] for scale in self.discriminate(nets, layout, fake)]
        loss = losses.multiscale_mean(real_logits, losses.hinge_discriminator_loss, fake_logits)
        return loss, {"d_loss": loss.item(), "d_real": torch.stack([r.mean() for r in real_logits]).mean().item(),
                      "d_fake": torch.stack([f.mean() for f in fake_logits]).mean().item()}

    def generator_loss(self, batch: ImageBatch, nets: Networks) -> LossResult:
        cfg, layout, real = self.config, self.planes(batch.label_maps), batch.images
        exemplars, exemplar_layout = self.training_exemplars(real, layout)
        out = nets["G"](layout, exemplars, targets=real)
        fake = out["images"]
        self._generated = (batch.label_maps, fake.detach())  # for the D phase
        with frozen_spectral_norm(nets["D"]):
            fake_features = self.discriminate(nets, layout, fake)
            with torch.no_grad():
                real_features = self.discriminate(nets, layout, real)
                exemplar_layers = self.feature_layers(exemplars, exemplar_layout, nets)
        fake_layers = self.feature_layers(fake, layout, nets, fake_features[0])
        real_layers = self.feature_layers(real, layout, nets, real_features[0])
        terms = {
            "g_adv": losses.multiscale_mean([scale[-1] for scale in fake_features], losses.hinge_generator_loss),
            "g_fm": losses.feature_matching_loss(real_features, fake_features),
            "g_perceptual": (fake_layers[-1] - real_layers[-1]).abs().mean(),
            "g_contextual": torch.stack([contextual_loss(self.on_grid(f), self.on_grid(e), cfg.contextual_bandwidth)
                                         for f, e in zip(fake_layers[:-1], exemplar_layers[:-1])]).sum(),
            "g_alignment": domain_alignment_loss(out["layout_domain"], out["target_domain"]),
            "g_cycle": correspondence_regularisation_loss(out["layout_to_exemplar"], out["exemplar_to_layout"],
                                                          out["exemplar_grid"]),
        }
        weights = {"g_adv": cfg.adversarial_weight, "g_fm": cfg.feature_matching_weight,
                   "g_perceptual": cfg.perceptual_weight, "g_contextual": cfg.contextual_weight,
                   "g_alignment": cfg.alignment_weight, "g_cycle": cfg.regularisation_weight}
        loss = sum(weights[k] * v for k, v in terms.items())
        logs = {"g_loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        # how far the warped exemplar is from the ground truth's own coarse image: the correspondence's quality
        logs["warp_l1"] = (out["warped"] - F.avg_pool2d(real, self.config.correspondence_stride)).abs().mean().item()
        return loss, logs

    def condition_of(self, batch: ImageBatch) -> ExemplarCondition:
        """Each layout with the next row's image as its exemplar (and that image's own layout)."""
        return ExemplarCondition(label_maps=batch.label_maps, exemplars=torch.roll(batch.images, 1, 0),
                                 exemplar_label_maps=torch.roll(batch.label_maps, 1, 0))

    @torch.no_grad()
    def generate(self, n: int, condition: ExemplarCondition | None = None) -> Tensor:
        """The n layouts of ``condition`` drawn in the appearance of its exemplars."""
        if not isinstance(condition, ExemplarCondition):
            raise DataError(f"family {self.name} translates a layout with an exemplar: generate needs an "
                            f"ExemplarCondition, got {type(condition).__name__}")
        if len(condition) != n:
            raise DataError(f"generate: {len(condition)} layouts for {n} outputs")
        condition = condition.to(self.device)
        return self.nets["G"](self.planes(condition.label_maps), condition.exemplars)

    def export_generator(self) -> ExemplarTranslationExport:
        """A snapshot of G with its spectral norms folded into the weights (their eval-mode value): plain
        convolutions trace under torch.export without the norms' weight-assigning hooks."""
        spec = self.spec
        return ExemplarTranslationExport(spectral_norms_folded(unwrap(self.nets["G"])), spec.map_classes, spec.channels,
                                         spec.image_size)
