"""The residual image-to-image generator of Johnson et al. (2016), as CycleGAN (and UNIT-style families) use it.

c7s1-k, d2k, d4k, ``blocks`` x R4k, u2k, uk, c7s1-C: a reflection-padded 7 x 7
convolution, two stride-2 3 x 3 convolutions down to a quarter of the side,
residual blocks of reflection-padded 3 x 3 convolutions there, two
fractionally-strided 3 x 3 convolutions back up, and a 7 x 7 convolution into
the output with tanh. Every hidden convolution is followed by instance norm
(without affine parameters, as CycleGAN's code) and ReLU. Reflection padding
keeps the image border free of the zero-padding artefacts a translation would
otherwise learn to reproduce. The side must be divisible by 4 and at least 8.
"""

from __future__ import annotations

from torch import Tensor, nn


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.ReLU()]


class ResidualBlock(nn.Module):
    """x + (pad, conv 3x3, IN, ReLU, pad, conv 3x3, IN)(x): both convolutions keep the channel count."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), *_norm_relu(channels),
                                  nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                  nn.InstanceNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """in_channels x H x W -> out_channels x H x W in [-1, 1]; ``width`` is k, ``blocks`` the residual count.

    The paper uses k = 64 with 6 blocks at 128 px and 9 at 256 px.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7), *_norm_relu(width)]
        for k in range(2):  # d2k, d4k
            layers += [nn.Conv2d(width * 2 ** k, width * 2 ** (k + 1), 3, stride=2, padding=1),
                       *_norm_relu(width * 2 ** (k + 1))]
        layers += [ResidualBlock(width * 4) for _ in range(blocks)]
        for k in (2, 1):  # u2k, uk
            layers += [nn.ConvTranspose2d(width * 2 ** k, width * 2 ** (k - 1), 3, stride=2, padding=1,
                                          output_padding=1),
                       *_norm_relu(width * 2 ** (k - 1))]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
