"""DCGAN blocks (Radford et al. 2016), sized for any square resolution 4·2^k or 7·2^k.

The architecture rules: strided convolutions in D and fractionally-strided ones in
G instead of pooling; batch norm in both (not on G's output or D's input layer);
ReLU in G with tanh on the output; LeakyReLU(0.2) in D; no hidden fully connected
layers (the first layer of G is a 1x1 -> base x base transposed convolution, the
last of D a base x base convolution, both equivalent to a projection).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def spatial_plan(image_size: int) -> tuple[int, int]:
    """(base, doublings): the smallest map D reduces to and how many 2x steps lead there."""
    size, doublings = image_size, 0
    while size % 2 == 0 and size > 4:
        size //= 2
        doublings += 1
    if doublings == 0:
        raise ValueError(f"image_size {image_size} cannot be reached by doubling from 4 or 7")
    return size, doublings


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights as in the DCGAN paper; batch-norm scale N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _norm(kind: str, channels: int, size: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation: required where a penalty is per sample (WGAN-GP)
        return nn.LayerNorm([channels, size, size])
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (expected batch, layer or none)")


class DCGANGenerator(nn.Module):
    """z (and an optional condition vector) -> image in [-1, 1]."""

    def __init__(self, z_dim: int, channels: int, image_size: int, width: int = 64, cond_dim: int = 0):
        super().__init__()
        base, doublings = spatial_plan(image_size)
        widths = [width * 2 ** i for i in reversed(range(doublings))]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + cond_dim, widths[0], base, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.z_dim = z_dim
        self.apply(dcgan_init)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            z = torch.cat([z, cond], dim=1)
        return self.net(z.view(z.size(0), -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image -> ``out_dim`` logits per sample (raw scores; no sigmoid)."""

    def __init__(self, channels: int, image_size: int, width: int = 64, norm: str = "batch", out_dim: int = 1):
        super().__init__()
        base, doublings = spatial_plan(image_size)
        widths = [width * 2 ** i for i in range(doublings)]
        size = image_size // 2
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for w_in, w_out in zip(widths, widths[1:]):
            size //= 2
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=norm == "none"), _norm(norm, w_out, size),
                       nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], out_dim, base, 1, 0)
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).flatten(1).squeeze(1)
