"""Spatially-adaptive denormalisation (SPADE, Park et al. 2019) and the residual generator built of it.

Batch norm alone washes a label map's layout out of the activations; SPADE
normalises without learned affine parameters and then modulates every pixel
with a gamma and beta predicted from the label map at that pixel, so the
layout reaches every layer. OASIS feeds the same blocks a label map with 3D
noise concatenated to it; SEAN replaces the modulation (``components/families/sean.py``).
"""

from __future__ import annotations

import copy

import contextlib
from typing import Iterator

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import remove_spectral_norm, spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm


class SPADE(nn.Module):
    """out = BN(x) * (1 + gamma(m)) + beta(m), with m the conditioning map resized to x's size.

    With a constant map gamma and beta are constants: SPADE is then
    conditional batch norm with the class's own scale and shift.
    """

    def __init__(self, channels: int, map_channels: int, hidden: int = 64, norm: str = "batch"):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False) if norm == "batch" else nn.InstanceNorm2d(channels)
        self.shared = nn.Sequential(nn.Conv2d(map_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, condition_map: Tensor) -> Tensor:
        gamma, beta = self.modulation(condition_map, x.shape[-2:])
        return self.norm(x) * (1 + gamma) + beta

    def modulation(self, condition_map: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        if condition_map.shape[-2:] != size:  # a no-op resize still copies the map, in every SPADE layer
            condition_map = F.interpolate(condition_map, size=size, mode="nearest")
        hidden = self.shared(condition_map)
        return self.gamma(hidden), self.beta(hidden)


class SPADEResBlock(nn.Module):
    """SPADE -> ReLU -> 3x3 conv, twice, with a learned (SPADE + 1x1 conv) shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, map_channels: int, hidden: int = 64, spectral: bool = True):
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        middle = min(cin, cout)
        self.norm_0, self.conv_0 = SPADE(cin, map_channels, hidden), wrap(nn.Conv2d(cin, middle, 3, padding=1))
        self.norm_1, self.conv_1 = SPADE(middle, map_channels, hidden), wrap(nn.Conv2d(middle, cout, 3, padding=1))
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, map_channels, hidden)
            self.conv_s = wrap(nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: Tensor, condition_map: Tensor) -> Tensor:
        shortcut = self.conv_s(self.norm_s(x, condition_map)) if self.learned_shortcut else x
        h = self.conv_0(F.leaky_relu(self.norm_0(x, condition_map), 0.2))
        h = self.conv_1(F.leaky_relu(self.norm_1(h, condition_map), 0.2))
        return shortcut + h


def upsampling_plan(image_size: int, min_size: int = 4) -> tuple[int, int]:
    """(start size, number of 2x upsamplings) from a small grid up to ``image_size``."""
    ups, size = 0, image_size
    while size % 2 == 0 and size // 2 >= min_size:
        size //= 2
        ups += 1
    return size, ups


class SPADEGenerator(nn.Module):
    """A coarse tensor (from a latent, or the downsampled map) grown by SPADE residual blocks to an image.

    ``z_dim`` > 0 starts from a linear map of z (SPADE's multi-modal mode, z
    from the image encoder or N(0, I)); 0 starts from a 3x3 conv of the
    downsampled condition map (the deterministic mode, and OASIS's).
    """

    def __init__(self, map_channels: int, out_channels: int, image_size: int, width: int = 64,
                 z_dim: int = 0, hidden: int = 64, max_width_mult: int = 4):
        super().__init__()
        self.start, ups = upsampling_plan(image_size)
        self.z_dim = z_dim
        widths = [width * min(2 ** (ups - i), max_width_mult) for i in range(ups + 1)]
        if z_dim > 0:
            self.head = nn.Linear(z_dim, widths[0] * self.start * self.start)
        else:
            self.head = nn.Conv2d(map_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(SPADEResBlock(a, b, map_channels, hidden)
                                    for a, b in zip([widths[0]] + widths[:-1], widths))
        self.to_image = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, condition_map: Tensor, z: Tensor | None = None) -> Tensor:
        if self.z_dim > 0:
            if z is None:
                raise ValueError("this SPADE generator starts from a latent: pass z")
            x = self.head(z).view(z.size(0), -1, self.start, self.start)
        else:
            x = self.head(F.interpolate(condition_map, size=(self.start, self.start), mode="nearest"))
        for k, block in enumerate(self.blocks):
            if k > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, condition_map)
        return self.to_image(F.leaky_relu(x, 0.2)).tanh()


def _advances_power_iteration(module: nn.Module) -> bool:
    """True for a layer whose spectral norm refines its singular vectors on a training-mode forward."""
    hooked = any(isinstance(hook, SpectralNorm) for hook in module._forward_pre_hooks.values())
    return hooked or type(module).__name__ == "_SpectralNorm"  # torch.nn.utils.parametrizations.spectral_norm


@contextlib.contextmanager
def frozen_spectral_norm(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` without advancing spectral norm's power iteration: their u, v buffers stay as they are.

    torch's spectral norm updates its estimate of the top singular vectors on
    every training-mode forward. A phase that only reads a network (D judging
    G's images in G's phase, G drawing D's fakes) must not change it, and one
    power iteration per weight update is spectral norm's own recipe. Only the
    spectral-normed layers leave training mode, so batch norm (SPADE's) keeps
    using batch statistics.
    """
    layers = [m for module in modules for m in module.modules() if m.training and _advances_power_iteration(m)]
    for layer in layers:
        layer.training = False
    try:
        yield
    finally:
        for layer in layers:
            layer.training = True


def spectral_norms_folded(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose spectral-normed layers hold W / sigma (their eval-mode weight) as plain
    parameters: an exported generator then traces without spectral norm's hooks."""
    network = copy.deepcopy(network)
    for module in network.modules():
        if any(isinstance(hook, SpectralNorm) for hook in module._forward_pre_hooks.values()):
            remove_spectral_norm(module)
    return network
