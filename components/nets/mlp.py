"""Fully connected blocks of the original GAN papers (Goodfellow 2014, Mirza 2014)."""

from __future__ import annotations

from torch import Tensor, nn


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): the max over ``pieces`` linear pieces."""

    def __init__(self, in_features: int, out_features: int, pieces: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features * pieces)
        self.out_features, self.pieces = out_features, pieces

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(x.size(0), self.out_features, self.pieces).amax(dim=2)


def relu_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear+ReLU layers through ``sizes`` (every layer followed by ReLU)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU(True)]
    return nn.Sequential(*layers)


def maxout_mlp(sizes: list[int], pieces: int, dropout: float) -> nn.Sequential:
    """Maxout layers through ``sizes``, each followed by dropout as in the GAN paper's D."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [Maxout(n_in, n_out, pieces), nn.Dropout(dropout)]
    return nn.Sequential(*layers)
