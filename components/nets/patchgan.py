"""PatchGAN discriminators (pix2pix, SPADE, SEAN, CoCosNet): a logit per overlapping patch, not per image.

Every discriminator here returns the activations of each of its layers, the
last being the patch logits, so a generator can match the discriminator's
intermediate features (pix2pixHD's feature-matching loss) without a second pass.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected instance, batch or none")


class PatchDiscriminator(nn.Module):
    """``layers`` stride-2 4x4 convolutions, one stride-1, then a 1-channel logit map.

    With 3 layers each logit sees a 70 x 70 patch (pix2pix's choice for 256 px
    images); on 32 px digits 2 layers (34 x 34 patches) or 1 (16 x 16) keep the
    judgement local. ``spectral`` wraps every convolution in spectral norm
    (SPADE's choice, with instance norm after it).
    """

    def __init__(self, in_channels: int, width: int = 64, layers: int = 3, norm: str = "instance",
                 spectral: bool = False, max_width: int = 512):
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        blocks = [nn.Sequential(wrap(nn.Conv2d(in_channels, width, 4, 2, 1)), nn.LeakyReLU(0.2))]
        cin = width
        for i in range(1, layers + 1):
            cout = min(width * 2 ** i, max_width)
            stride = 2 if i < layers else 1
            blocks.append(nn.Sequential(wrap(nn.Conv2d(cin, cout, 4, stride, 1, bias=norm == "none")),
                                        _norm(norm, cout), nn.LeakyReLU(0.2)))
            cin = cout
        blocks.append(nn.Sequential(wrap(nn.Conv2d(cin, 1, 4, 1, 1))))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Activations of every block; the last is the N x 1 x h x w patch logits."""
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features

    @property
    def receptive_field(self) -> int:
        """Input pixels each patch logit sees, per side."""
        field = 1
        for block in reversed(self.blocks):
            conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
            field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
        return field


class MultiScaleDiscriminator(nn.Module):
    """``scales`` PatchGANs, the k-th seeing the input average-pooled k times (pix2pixHD, SPADE).

    The coarse discriminators judge global layout, the fine one texture; each
    returns its own activation list.
    """

    def __init__(self, in_channels: int, scales: int = 2, width: int = 64, layers: int = 3,
                 norm: str = "instance", spectral: bool = True):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, width, layers, norm, spectral)
                                    for _ in range(scales))

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        outputs = []
        for k, discriminator in enumerate(self.scales):
            if k > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(x))
        return outputs
