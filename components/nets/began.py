"""BEGAN blocks (Berthelot et al. 2017): the auto-encoder discriminator and the decoder-shaped generator.

The paper's architecture: 3x3 convolutions with ELU, no batch norm and no dropout.
The encoder repeats (conv-ELU, conv-ELU, stride-2 conv) with filters growing
linearly (n, 2n, 3n, ...) down to the smallest map and projects it to an
embedding of size h; the decoder projects h back to n x base x base and repeats
(conv-ELU, conv-ELU, nearest-neighbour 2x upsampling) up to the image. The
generator has the decoder's architecture with its own weights.
"""

from __future__ import annotations

from torch import Tensor, nn

from components.nets.dcgan import spatial_plan


def conv_elu_pair(width: int) -> list[nn.Module]:
    """Two 3x3 same-size convolutions with ELU: the unit each BEGAN scale repeats."""
    return [nn.Conv2d(width, width, 3, 1, 1), nn.ELU(True), nn.Conv2d(width, width, 3, 1, 1), nn.ELU(True)]


class BEGANDecoder(nn.Module):
    """h -> image; ``squash`` adds tanh where the output must lie in [-1, 1] (the generator)."""

    def __init__(self, h_dim: int, channels: int, image_size: int, width: int = 64, squash: bool = False):
        super().__init__()
        self.base, doublings = spatial_plan(image_size)
        self.width = width
        self.project = nn.Linear(h_dim, width * self.base * self.base)
        layers: list[nn.Module] = []
        for _ in range(doublings):
            layers += [*conv_elu_pair(width), nn.Upsample(scale_factor=2, mode="nearest")]
        layers += [*conv_elu_pair(width), nn.Conv2d(width, channels, 3, 1, 1)]
        if squash:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(self.project(h).view(h.size(0), self.width, self.base, self.base))


class BEGANEncoder(nn.Module):
    """image -> h; stride-2 convolutions subsample, filters grow linearly with depth."""

    def __init__(self, h_dim: int, channels: int, image_size: int, width: int = 64):
        super().__init__()
        base, doublings = spatial_plan(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.ELU(True)]
        for level in range(1, doublings + 1):
            layers += [*conv_elu_pair(width * level), nn.Conv2d(width * level, width * (level + 1), 3, 2, 1),
                       nn.ELU(True)]
        top = width * (doublings + 1)
        layers += conv_elu_pair(top)
        self.net = nn.Sequential(*layers)
        self.project = nn.Linear(top * base * base, h_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.net(x).flatten(1))


class AutoEncoderDiscriminator(nn.Module):
    """image -> its reconstruction; BEGAN's D scores an image by how badly it reconstructs it."""

    def __init__(self, channels: int, image_size: int, width: int = 64, h_dim: int = 64):
        super().__init__()
        self.encoder = BEGANEncoder(h_dim, channels, image_size, width)
        self.decoder = BEGANDecoder(h_dim, channels, image_size, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))
