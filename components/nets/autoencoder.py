"""EBGAN's auto-encoder discriminator (Zhao, Mathieu & LeCun 2017): energy = reconstruction error.

D(x) = ||Dec(Enc(x)) - x||, taken as the per-sample mean squared error. The
encoder follows the DCGAN discriminator's rules (strided 4x4 convolutions,
LeakyReLU(0.2), batch norm after all but the input layer) down to the DCGAN
base map; the decoder mirrors it with fractionally-strided convolutions and
ReLU, as in the paper's "(64)4c2s-(128)4c2s-... / ...-(3)4dc2s" auto-encoders.
"""

from __future__ import annotations

from torch import Tensor, nn

from components.nets.dcgan import dcgan_init, spatial_plan


def reconstruction_energy(images: Tensor, reconstructions: Tensor) -> Tensor:
    """Per-sample mean squared reconstruction error: low on the data manifold, high elsewhere."""
    return (reconstructions - images).pow(2).flatten(1).mean(1)


def _encoder(channels: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for w_in, w_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2, True)]
    return nn.Sequential(*layers)


def _decoder(channels: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[::-1], widths[::-1][1:]):
        layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
    # Linear output, no tanh: the discriminator must be able to push a fake's energy above the
    # margin (m = 10 on MNIST), which a [-1, 1]-bounded reconstruction (energy <= 4) never reaches.
    layers.append(nn.ConvTranspose2d(widths[0], channels, 4, 2, 1))
    return nn.Sequential(*layers)


class AutoEncoderDiscriminator(nn.Module):
    """image -> (energy per sample, encoder code per sample flattened).

    Both come out of ``forward`` so that data-parallel wrappers see one call;
    the code feeds EBGAN's pulling-away term.
    """

    def __init__(self, channels: int, image_size: int, width: int = 64):
        super().__init__()
        _, doublings = spatial_plan(image_size)
        widths = [width * 2 ** i for i in range(doublings)]
        self.encoder = _encoder(channels, widths)
        self.decoder = _decoder(channels, widths)
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        code = self.encoder(x)
        return reconstruction_energy(x, self.decoder(code)), code.flatten(1)
