"""The U-Net generator of pix2pix (Isola et al. 2017): an encoder-decoder with skip connections.

Encoder: stride-2 4x4 convolutions, each followed by batch norm (none on the
first layer, which sees the raw image, nor on the innermost, whose 1 x 1 map
the official implementation leaves unnormalised) and LeakyReLU(0.2). Decoder:
stride-2 4x4 transposed convolutions with batch norm and ReLU, each fed the
previous decoder map concatenated with the encoder map of the same size, so
the detail the bottleneck cannot carry goes around it; tanh on the output.
Dropout 0.5 after the norm of the first (innermost) decoder layers is the
generator's only noise: the paper keeps it on at test time, so ``forward``
applies it whenever ``dropout`` is true, whatever ``self.training`` says;
``Deterministic`` wraps the net with it off (the exported, traceable graph).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def unet_depth(image_size: int, bottleneck_size: int = 1) -> int:
    """How many 2x reductions bring ``image_size`` down to ``bottleneck_size`` (or to an odd side)."""
    size, depth = image_size, 0
    while size % 2 == 0 and size > bottleneck_size:
        size //= 2
        depth += 1
    if depth == 0:
        raise ValueError(f"image_size {image_size} cannot be halved: the U-Net needs an even image size")
    return depth


def _batch_norm(channels: int, normalise: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if normalise else nn.Identity()


class UNetGenerator(nn.Module):
    """in_channels x H x W in [-1, 1] -> out_channels x H x W in [-1, 1].

    ``width`` is the first encoder layer's channels, doubling with each layer
    up to ``max_width`` (the paper: 64 doubling to 512, eight layers at 256 px).
    ``dropout_layers`` innermost decoder layers drop with ``dropout`` (the
    paper: three, p = 0.5); the output layer never does.
    """

    def __init__(self, in_channels: int, out_channels: int, image_size: int, width: int = 64,
                 max_width: int = 512, dropout: float = 0.5, dropout_layers: int = 3, bottleneck_size: int = 1):
        super().__init__()
        depth = unet_depth(image_size, bottleneck_size)
        widths = [min(width * 2 ** i, max_width) for i in range(depth)]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(widths):
            normalise = 0 < i < depth - 1
            self.encoder.append(nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=not normalise),
                                              _batch_norm(cout, normalise), nn.LeakyReLU(0.2)))
            cin = cout
        # decoder[0] is the innermost layer (input: the bottleneck alone); decoder[k] takes decoder[k-1]'s
        # output joined with the encoder map of the same size; the last one maps to the image
        self.decoder = nn.ModuleList()
        for k in range(depth - 1):
            cout = widths[depth - 2 - k]
            cin = widths[-1] if k == 0 else 2 * widths[depth - 1 - k]
            self.decoder.append(nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                                              nn.BatchNorm2d(cout)))
        last_in = widths[-1] if depth == 1 else 2 * widths[0]
        self.decoder.append(nn.ConvTranspose2d(last_in, out_channels, 4, 2, 1))
        self.dropout, self.dropout_layers = dropout, min(dropout_layers, depth - 1)
        self.depth = depth

    def forward(self, inputs: Tensor, dropout: bool = True) -> Tensor:
        """The translation of ``inputs``; ``dropout`` False gives the deterministic (mean-field) net."""
        skips = []
        x = inputs
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck
        for k, layer in enumerate(self.decoder):
            if k > 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x)
            if k == len(self.decoder) - 1:
                break
            if dropout and k < self.dropout_layers:
                x = F.dropout(x, self.dropout, training=True)
            x = F.relu(x)
        return torch.tanh(x)


class Deterministic(nn.Module):
    """A U-Net with its dropout off: one tensor in, one out, the same output for the same input."""

    def __init__(self, unet: UNetGenerator):
        super().__init__()
        self.unet = unet

    def forward(self, inputs: Tensor) -> Tensor:
        return self.unet(inputs, dropout=False)
