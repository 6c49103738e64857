"""Blocks of Karras et al.'s generators and discriminators (PGGAN 2018, reused by StyleGAN 2019).

* Equalised learning rate: weights are drawn from N(0, 1) and multiplied at run
  time by He's constant gain / sqrt(fan_in), so Adam's scale-free updates move
  every layer at the same speed whatever its fan-in (PGGAN section 4.1). A
  learning-rate multiplier (StyleGAN's mapping network uses 0.01) divides the
  stored weights and multiplies the runtime scale by the same factor.
* Pixel norm: each feature vector scaled to unit RMS over channels (section 4.2).
* Minibatch standard deviation: the mean over features of the per-feature
  standard deviation within a group of samples, appended as one extra feature
  map near the end of D (section 3, with the group size of the paper's code).
* Progressive growing: resolutions ``base * 2**k`` up to the data size, a growth
  schedule mapping the fraction of the run done to (stage, fade-in alpha),
  and the G and D whose top layers are faded in with alpha (section 2, figure 2).

Data sizes that are not a power of two use the base of ``spatial_plan``: 28 px
grows 7 -> 14 -> 28, 32 px grows 4 -> 8 -> 16 -> 32. Every stage is then an
exact 2x nearest-neighbour upsampling (G) or 2x2 average pooling (D and the real
images) of the next, as in the paper; generating at 32 and resampling to 28
would add an interpolation that neither network can undo and spend compute on
pixels that are thrown away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.nets.dcgan import spatial_plan

LEAKY_SLOPE = 0.2  # leaky ReLU slope of every hidden layer in both papers
HE_GAIN = math.sqrt(2.0)


class EqualizedLinear(nn.Module):
    """A fully connected layer whose weights are scaled at run time (equalised learning rate)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = HE_GAIN,
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_scale = gain / math.sqrt(in_features) * lr_multiplier
        self.bias_scale = lr_multiplier
        if self.bias is not None:
            with torch.no_grad():
                self.bias.div_(lr_multiplier)  # stored / lr_mul, so the effective initial bias is bias_init

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_scale
        return F.linear(x, self.weight * self.weight_scale, bias)


class EqualizedConv2d(nn.Module):
    """A same-size convolution (odd kernel) with runtime-scaled weights (equalised learning rate)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 gain: float = HE_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.weight_scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """b = a / sqrt(mean_j(a_j^2) + eps) over the channels of each pixel (or of each vector)."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest d <= limit dividing n (1 at worst)."""
    return next(d for d in range(min(n, limit), 0, -1) if n % d == 0)


class MinibatchStdDev(nn.Module):
    """Appends one feature map: the average over features and pixels of the std within a sample group.

    Groups are samples i, i + M, i + 2M, ... as in the paper's code. A batch the
    group size does not divide uses the largest group size that does, rather
    than failing on the last or an odd-sized batch.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8):
        super().__init__()
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        group = largest_divisor_at_most(n, self.group_size)
        y = x.reshape(group, -1, c, h, w)
        y = (y - y.mean(dim=0)).pow(2).mean(dim=0).add(self.eps).sqrt()  # M x C x H x W
        y = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).repeat(group, 1, h, w)  # back to sample order
        return torch.cat([x, y], dim=1)


class Blur(nn.Module):
    """The [1, 2, 1] binomial low-pass filter per channel: StyleGAN's smoother up/downsampling."""

    def __init__(self) -> None:
        super().__init__()
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = kernel[:, None] * kernel[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.kernel.expand(x.size(1), 1, 3, 3)
        # replicate padding: zero padding would pull a -1 (black) background towards 0 along the border
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=x.size(1))


def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


def upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2)


def stage_resolutions(image_size: int) -> list[int]:
    """The resolution of each growth stage, base first: 28 -> [7, 14, 28], 32 -> [4, 8, 16, 32]."""
    base, doublings = spatial_plan(image_size)
    return [base * 2 ** k for k in range(doublings + 1)]


def stage_widths(stages: int, width_base: int, max_width: int) -> list[int]:
    """Channels per stage, base first: min(max_width, width_base / 2^k), the paper's fmap_base/fmap_max rule."""
    return [max(1, min(max_width, width_base // 2 ** k)) for k in range(stages)]


def keep_in_graph(output: Tensor, unused: Iterable[nn.Module]) -> Tensor:
    """``output`` plus zero times every parameter of ``unused``.

    The trainer wraps each network in DistributedDataParallel without
    find_unused_parameters, which fails on a parameter that gets no gradient.
    Layers of stages not grown yet (or faded out) get an exact zero gradient
    instead; with Adam's beta1 = 0 a zero gradient moves nothing.
    """
    total = output.new_zeros(())
    for module in unused:
        for parameter in module.parameters():
            total = total + parameter.sum()
    return output + 0.0 * total


def reals_at_stage(images: Tensor, resolutions: list[int], stage: int, alpha: float) -> Tensor:
    """Real images as D sees them at ``stage``: box-downsampled, and blended during fade-in.

    While the new stage fades in, the reals are interpolated between the
    previous resolution (nearest-upsampled) and the new one with the same alpha
    as G's output, so D never sees sharper reals than fakes (the paper's code,
    process_reals).
    """
    current = resolutions[stage]
    if images.size(-1) != resolutions[-1]:
        raise ValueError(f"images of size {images.size(-1)}, expected the data size {resolutions[-1]}")
    x = F.avg_pool2d(images, resolutions[-1] // current) if current != resolutions[-1] else images
    if stage > 0 and alpha < 1.0:
        x = torch.lerp(upsample2x(downsample2x(x)), x, alpha)
    return x


@dataclass(frozen=True)
class GrowthSchedule:
    """Fraction of the run to (stage, alpha): stage s starts at ``s * stage_fraction``.

    Every stage after the first fades in, alpha rising linearly from 0 to 1 over
    ``fade_fraction`` of the run, then trains stable until the next stage starts
    (the paper's alternating fade-in and stabilisation phases); the last stage
    runs until training ends. Fractions, not steps, so a run stopped by a time
    budget still reaches the full resolution.
    """

    stages: int
    stage_fraction: float
    fade_fraction: float

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError(f"a growth schedule needs at least 1 stage, got {self.stages}")
        if not 0.0 < self.stage_fraction < 1.0:
            raise ValueError(f"stage_fraction must be in (0, 1), got {self.stage_fraction}")
        if not 0.0 <= self.fade_fraction <= self.stage_fraction:
            raise ValueError(f"fade_fraction must be in [0, stage_fraction = {self.stage_fraction}], "
                             f"got {self.fade_fraction}")

    @property
    def grown_at(self) -> float:
        """The fraction of the run at which the last stage is fully faded in (0 with a single stage)."""
        if self.stages == 1:
            return 0.0
        return (self.stages - 1) * self.stage_fraction + self.fade_fraction

    def at(self, fraction: float) -> tuple[int, float]:
        # rounded to 1e-6: a boundary that is exact in decimal (0.4 = 2 x 0.2) but off by an ulp in binary
        # floats, or in the float32 buffer that holds the fraction, still starts its stage with alpha exactly
        # 0 and ends its fade with alpha exactly 1 (G and D only skip the blend at alpha 1)
        stage = min(int(round(fraction / self.stage_fraction, 6)), self.stages - 1)
        if stage == 0 or self.fade_fraction == 0.0:
            return stage, 1.0
        alpha = round((fraction - stage * self.stage_fraction) / self.fade_fraction, 6)
        return stage, min(1.0, max(0.0, alpha))


class ProgressiveGenerator(nn.Module):
    """z -> image, grown stage by stage; the run-progress buffer decides the stage and alpha.

    Architecture of the paper's table 2, with its widths scaled: pixel-normalised
    z, a dense projection to base x base (a base x base transposed convolution),
    a 3x3 conv, then per stage nearest-neighbour 2x upsampling and two 3x3
    convs, each conv followed by leaky ReLU and pixel norm; 1x1 toRGB per stage
    with a linear output.
    """

    def __init__(self, z_dim: int, channels: int, image_size: int, widths: list[int], schedule: GrowthSchedule):
        super().__init__()
        self.resolutions = stage_resolutions(image_size)
        if len(widths) != len(self.resolutions) or schedule.stages != len(self.resolutions):
            raise ValueError(f"{len(self.resolutions)} stages for {image_size} px, got {len(widths)} widths and "
                             f"a schedule of {schedule.stages}")
        base = self.resolutions[0]
        self.base, self.widths, self.schedule = base, widths, schedule
        self.pixel_norm = PixelNorm()
        # the projection is a base x base transposed convolution of a 1x1 input: its fan-in counts base^2 taps
        self.project = EqualizedLinear(z_dim, widths[0] * base * base, gain=HE_GAIN / base)
        self.base_conv = EqualizedConv2d(widths[0], widths[0], 3)
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualizedConv2d(w_in, w_out, 3), EqualizedConv2d(w_out, w_out, 3)])
            for w_in, w_out in zip(widths, widths[1:]))
        self.to_rgb = nn.ModuleList(EqualizedConv2d(w, channels, 1, gain=1.0) for w in widths)
        # the fraction of the run done, 0 to 1: a buffer so checkpoints, resumes and generation after loading
        # agree on the resolution and alpha
        self.register_buffer("progress", torch.zeros((), dtype=torch.float32))

    def set_progress(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:  # also refuses NaN
            raise ValueError(f"the fraction of the run done must be in [0, 1], got {fraction}")
        self.progress.fill_(fraction)

    def growth(self) -> tuple[int, float]:
        """(stage, alpha) at the current fraction of the run."""
        return self.schedule.at(float(self.progress.item()))

    @property
    def resolution(self) -> int:
        return self.resolutions[self.growth()[0]]

    def _normed(self, x: Tensor) -> Tensor:
        return self.pixel_norm(lrelu(x))

    def forward(self, z: Tensor, training_resolution: bool = False, stage: int | None = None,
                alpha: float | None = None) -> Tensor:
        """Images at the stage's resolution (raw, what D trains on) when ``training_resolution``;
        otherwise nearest-upsampled to the data size and clipped to [-1, 1] (what evaluation sees).

        The stage and alpha follow the progress buffer unless given (an export fixes them as constants).
        """
        if stage is None or alpha is None:
            stage, alpha = self.growth()
        h = self._normed(self.project(self.pixel_norm(z)).view(z.size(0), self.widths[0], self.base, self.base))
        h = self._normed(self.base_conv(h))
        previous = h
        for first, second in self.blocks[:stage]:
            previous = h
            h = self._normed(second(self._normed(first(upsample2x(h)))))
        rgb = self.to_rgb[stage](h)
        used_rgb = {stage}
        if stage > 0 and alpha < 1.0:
            rgb = torch.lerp(upsample2x(self.to_rgb[stage - 1](previous)), rgb, alpha)
            used_rgb.add(stage - 1)
        unused = [*self.blocks[stage:], *(m for k, m in enumerate(self.to_rgb) if k not in used_rgb)]
        rgb = keep_in_graph(rgb, unused)
        if training_resolution:
            return rgb
        scale = self.resolutions[-1] // self.resolutions[stage]
        if scale > 1:
            rgb = F.interpolate(rgb, scale_factor=scale, mode="nearest")
        return rgb.clamp(-1.0, 1.0)


class DiscriminatorBlock(nn.Module):
    """conv3x3, leaky ReLU, (blur), conv3x3, leaky ReLU, 2x2 average pooling: one resolution down."""

    def __init__(self, in_channels: int, out_channels: int, blur: bool = False):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.blur = Blur() if blur else nn.Identity()
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return downsample2x(lrelu(self.conv1(self.blur(lrelu(self.conv0(x))))))


class ProgressiveDiscriminator(nn.Module):
    """image -> one raw score per sample; the mirror of the generator (paper table 2).

    1x1 fromRGB with leaky ReLU, a block per stage down to the base, then the
    minibatch-stddev feature map, a 3x3 conv, a dense layer over the base x base
    map (a base x base conv) and a linear output. The stage and alpha come from
    the caller (the generator's progress), so one schedule drives both networks.
    With ``grow=False`` it is the fixed-resolution discriminator of StyleGAN:
    only the full-resolution fromRGB exists.
    """

    def __init__(self, channels: int, image_size: int, widths: list[int], mbstd_group: int = 4,
                 blur: bool = False, grow: bool = True):
        super().__init__()
        self.resolutions = stage_resolutions(image_size)
        if len(widths) != len(self.resolutions):
            raise ValueError(f"{len(self.resolutions)} stages for {image_size} px, got {len(widths)} widths")
        base, self.grow = self.resolutions[0], grow
        rgb_widths = widths if grow else widths[-1:]
        self.from_rgb = nn.ModuleList(EqualizedConv2d(channels, w, 1) for w in rgb_widths)
        self.blocks = nn.ModuleList(DiscriminatorBlock(w_in, w_out, blur) for w_out, w_in in zip(widths, widths[1:]))
        self.mbstd = MinibatchStdDev(mbstd_group)
        self.head_conv = EqualizedConv2d(widths[0] + 1, widths[0], 3)
        self.head_dense = EqualizedLinear(widths[0] * base * base, widths[0])
        self.head_out = EqualizedLinear(widths[0], 1, gain=1.0)

    def _from_rgb(self, stage: int) -> nn.Module:
        return self.from_rgb[stage] if self.grow else self.from_rgb[0]

    def forward(self, x: Tensor, stage: int | None = None, alpha: float = 1.0) -> Tensor:
        last = len(self.resolutions) - 1
        stage = last if stage is None else stage
        if not self.grow and (stage != last or alpha < 1.0):
            raise ValueError("a discriminator built with grow=False only runs at the full resolution")
        if x.size(-1) != self.resolutions[stage]:
            raise ValueError(f"stage {stage} expects {self.resolutions[stage]} px images, got {x.size(-1)} px")
        h = lrelu(self._from_rgb(stage)(x))
        used_rgb = {stage}
        if stage > 0:
            h = self.blocks[stage - 1](h)
            if alpha < 1.0:
                h = torch.lerp(lrelu(self._from_rgb(stage - 1)(downsample2x(x))), h, alpha)
                used_rgb.add(stage - 1)
        for block in reversed(self.blocks[:stage - 1] if stage > 1 else []):
            h = block(h)
        h = lrelu(self.head_conv(self.mbstd(h)))
        score = self.head_out(lrelu(self.head_dense(h.flatten(1)))).squeeze(1)
        if self.grow:
            unused = [*self.blocks[stage:], *(m for k, m in enumerate(self.from_rgb) if k not in used_rgb)]
            score = keep_in_graph(score, unused)
        return score


class FixedStageGenerator(nn.Module):
    """One tensor in, one out: the generator frozen at one (stage, alpha), images at the data size.

    Python constants instead of the progress buffer let ``torch.export`` trace
    one graph (it cannot branch on a tensor's value).
    """

    def __init__(self, generator: ProgressiveGenerator, stage: int, alpha: float):
        super().__init__()
        self.generator, self.stage, self.alpha = generator, stage, alpha

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z, stage=self.stage, alpha=self.alpha)
