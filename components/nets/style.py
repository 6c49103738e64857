"""Blocks of the style-based generator (Karras, Laine & Aila, 2019).

z is pixel-normalised and mapped by an 8-layer MLP (learning-rate multiplier
0.01, equalised) to w. The synthesis network starts from a learned constant,
and every layer ends with the same epilogue: per-pixel noise scaled by a
learned per-channel factor, a bias, leaky ReLU and AdaIN, whose per-channel
scale and shift are a learned affine map of that layer's w. Resolutions after
the first upsample by nearest neighbour, convolve and low-pass with a [1, 2, 1]
filter (the paper's bilinear up/downsampling, configuration B). Each layer can
take a different w: that is what style mixing and the truncation trick use.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from components.nets.progressive import (Blur, EqualizedConv2d, EqualizedLinear, PixelNorm, lrelu, stage_resolutions,
                                         upsample2x)

NoiseMode = Literal["random", "const", "none"]


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``layers`` equalised fully connected layers with leaky ReLU."""

    def __init__(self, z_dim: int, w_dim: int, layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.pixel_norm = PixelNorm()
        dims = [z_dim] + [w_dim] * layers
        # lr multiplier 0.01: the mapping learns 100x slower than the synthesis network, which the
        # paper found keeps the deep MLP stable under the synthesis network's learning rate
        self.layers = nn.ModuleList(EqualizedLinear(d_in, d_out, lr_multiplier=lr_multiplier)
                                    for d_in, d_out in zip(dims, dims[1:]))

    def forward(self, z: Tensor) -> Tensor:
        w = self.pixel_norm(z)
        for layer in self.layers:
            w = lrelu(layer(w))
        return w


class NoiseInjection(nn.Module):
    """x + s * noise: one N(0, 1) value per pixel, broadcast over channels with a learned scale per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))  # zero: noise is learned in, not imposed

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight.view(1, -1, 1, 1) * noise


class AdaIN(nn.Module):
    """AdaIN(x, y) = y_s (x - mu(x)) / sigma(x) + y_b, with (y_s, y_b) an affine map A of w.

    The scale is parametrised as 1 + A_s(w) with A's bias at zero, as in the
    paper's code, so a fresh layer starts as a plain instance norm.
    """

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-8):
        super().__init__()
        self.style = EqualizedLinear(w_dim, 2 * channels, gain=1.0)
        self.eps = eps

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + self.eps)
        scale, shift = self.style(w).view(x.size(0), 2, x.size(1), 1, 1).unbind(1)
        return x * (1 + scale) + shift


class StyleLayer(nn.Module):
    """[upsample, conv3x3, blur], then the epilogue: noise, bias, leaky ReLU, AdaIN(w).

    ``in_channels=None`` is the first layer, which acts on the learned constant
    without a convolution.
    """

    def __init__(self, in_channels: int | None, out_channels: int, w_dim: int, upsample: bool = False,
                 blur: bool = True):
        super().__init__()
        self.upsample = upsample
        self.conv = None if in_channels is None else EqualizedConv2d(in_channels, out_channels, 3, bias=False)
        self.blur = Blur() if upsample and blur else nn.Identity()
        self.noise = NoiseInjection(out_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.adain = AdaIN(out_channels, w_dim)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        if self.upsample:
            x = upsample2x(x)
        if self.conv is not None:
            x = self.blur(self.conv(x))
        x = lrelu(self.noise(x, noise) + self.bias.view(1, -1, 1, 1))
        return self.adain(x, w)


class SynthesisNetwork(nn.Module):
    """Per-layer w (N x layers x w_dim) -> image: a learned constant, two style layers per resolution, 1x1 toRGB.

    Fixed per-layer noise maps are kept as buffers (the paper's code's
    non-randomised noise), so an export can be deterministic and still show
    the learned noise.
    """

    def __init__(self, w_dim: int, channels: int, image_size: int, widths: list[int], blur: bool = True):
        super().__init__()
        self.resolutions = stage_resolutions(image_size)
        if len(widths) != len(self.resolutions):
            raise ValueError(f"{len(self.resolutions)} resolutions for {image_size} px, got {len(widths)} widths")
        base = self.resolutions[0]
        self.const = nn.Parameter(torch.ones(1, widths[0], base, base))
        layers = [StyleLayer(None, widths[0], w_dim), StyleLayer(widths[0], widths[0], w_dim)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [StyleLayer(w_in, w_out, w_dim, upsample=True, blur=blur), StyleLayer(w_out, w_out, w_dim)]
        self.layers = nn.ModuleList(layers)
        self.layer_resolutions = [r for r in self.resolutions for _ in range(2)]
        for index, size in enumerate(self.layer_resolutions):
            self.register_buffer(f"noise_const_{index}", torch.randn(1, 1, size, size))
        self.to_rgb = EqualizedConv2d(widths[-1], channels, 1, gain=1.0)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _noise(self, index: int, like: Tensor, mode: NoiseMode) -> Tensor:
        size = self.layer_resolutions[index]
        if mode == "random":
            return torch.randn(like.size(0), 1, size, size, device=like.device, dtype=like.dtype)
        if mode == "const":
            return getattr(self, f"noise_const_{index}")
        if mode == "none":
            return like.new_zeros(1, 1, size, size)
        raise ValueError(f"unknown noise mode {mode!r} (expected random, const or none)")

    def forward(self, ws: Tensor, noise: NoiseMode = "random") -> Tensor:
        if ws.dim() != 3 or ws.size(1) != self.num_layers:
            raise ValueError(f"expected per-layer styles N x {self.num_layers} x w_dim, got {tuple(ws.shape)}")
        x = self.const.expand(ws.size(0), -1, -1, -1)
        for index, layer in enumerate(self.layers):
            x = layer(x, ws[:, index], self._noise(index, ws, noise))
        return self.to_rgb(x)


class StyleGenerator(nn.Module):
    """z -> image through mapping and synthesis, with style mixing and the truncation trick.

    ``w_avg`` is the running mean of w (an exponential moving average, updated
    by the family from its training batches), the centre of the truncation
    w' = w_avg + psi (w - w_avg).
    """

    def __init__(self, z_dim: int, w_dim: int, channels: int, image_size: int, widths: list[int],
                 mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01, blur: bool = True):
        super().__init__()
        self.z_dim = z_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_multiplier)
        self.synthesis = SynthesisNetwork(w_dim, channels, image_size, widths, blur)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    @property
    def num_layers(self) -> int:
        return self.synthesis.num_layers

    def styles(self, z: Tensor, mix_latents: Tensor | None = None, crossover: Tensor | int | None = None,
               truncation_psi: float = 1.0) -> Tensor:
        """Per-layer w: layers below ``crossover`` (per sample, or one int) from z, the rest from ``mix_latents``."""
        w = self.mapping(z)
        ws = w.unsqueeze(1).expand(-1, self.num_layers, -1)
        if mix_latents is not None:
            if crossover is None:
                raise ValueError("style mixing needs a crossover layer")
            crossover = torch.as_tensor(crossover, device=z.device).reshape(-1, 1)
            coarse = torch.arange(self.num_layers, device=z.device).unsqueeze(0) < crossover
            ws = torch.where(coarse.unsqueeze(2), ws, self.mapping(mix_latents).unsqueeze(1))
        if truncation_psi != 1.0:
            ws = torch.lerp(self.w_avg.view(1, 1, -1), ws, truncation_psi)
        return ws

    def forward(self, z: Tensor, mix_latents: Tensor | None = None, crossover: Tensor | int | None = None,
                truncation_psi: float = 1.0, noise: NoiseMode = "random") -> Tensor:
        """Raw (linear-output) images at the data size."""
        return self.synthesis(self.styles(z, mix_latents, crossover, truncation_psi), noise)

    @torch.no_grad()
    def update_w_avg(self, w_mean: Tensor, beta: float) -> None:
        """w_avg <- beta w_avg + (1 - beta) mean(w), from one batch's mean w."""
        # under autocast (bf16/fp16 training) the batch mean comes in that dtype; the average stays fp32
        self.w_avg.copy_(torch.lerp(w_mean.to(self.w_avg.dtype), self.w_avg, beta))


class TruncatedStyleGenerator(nn.Module):
    """One tensor in, one out: z -> truncated image in [-1, 1] with the fixed noise maps.

    Fixed noise keeps the export deterministic, so the registry's graph (a
    torch.export trace) reproduces the eager generator exactly.
    """

    def __init__(self, generator: StyleGenerator, truncation_psi: float = 1.0):
        super().__init__()
        self.generator, self.truncation_psi = generator, truncation_psi

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z, truncation_psi=self.truncation_psi, noise="const").clamp(-1.0, 1.0)
