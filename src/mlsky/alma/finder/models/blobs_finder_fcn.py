"""A fully convolutional Blobs Finder: the paper's encoder and decoder blocks, no bottleneck.

The paper's Blobs Finder (:mod:`~mlsky.alma.finder.models.blobs_finder`) squeezes the image
through a 1,024-wide fully connected layer: it fixes the input size, holds most of the
weights (33 M of them at 128 x 128 inputs), and must rebuild every position from that vector.
This variant keeps the conv blocks and the two-branch up-sampling of Table 3 but drops the
fully connected layers and adds U-Net skip connections (Ronneberger et al. 2015), so that:

- any image whose sides are multiples of 16 goes through, with no tiling;
- positions are passed from the encoder to the decoder at every scale;
- the weights are a fraction of a megabyte and ship inside the package.

It reads several input planes: by default, images of the cube matched-filtered with a few
line widths (:func:`~mlsky.alma.finder.inputs.matched_filter_images`), in units of the noise.

Examples
--------
>>> import torch
>>> net = BlobsFinderFCN(in_channels=4)
>>> net(torch.zeros(2, 4, 48, 80)).shape
torch.Size([2, 1, 48, 80])
"""

from __future__ import annotations

import torch
from torch import nn

from mlsky.alma.finder.models import register_model
from mlsky.alma.finder.models.blobs_finder import DeconvBlock, conv_block


@register_model("blobs_finder_fcn")
class BlobsFinderFCN(nn.Module):
    """Input planes ``(b, C, H, W)`` -> source probability map ``(b, 1, H, W)``; H, W multiples of 16.

    Parameters
    ----------
    in_channels
        Number of input planes ``C``.
    width
        Channels of the first encoder block; each further block doubles them (paper: 8).
    """

    version = 1
    #: Images must have sides that are multiples of this (four stride-2 blocks).
    multiple = 16

    def __init__(self, in_channels: int = 1, width: int = 8):
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"BlobsFinderFCN needs in_channels >= 1 and width >= 1, got {in_channels}, {width}")
        self.in_channels = in_channels
        c = [in_channels] + [width * 2**i for i in range(4)]
        self.encoder = nn.ModuleList(conv_block(c[i], c[i + 1], stride=2) for i in range(4))
        self.middle = conv_block(c[4], c[4], stride=1)
        # Decoder level i: up-sample, then merge with the encoder's output of the same size.
        self.up = nn.ModuleList(DeconvBlock(c[i + 1], c[i + 1]) for i in range(3, -1, -1))
        self.merge = nn.ModuleList(conv_block(c[i + 1] + c[i], max(c[i], width), stride=1) for i in range(3, -1, -1))
        self.final = nn.Sequential(nn.Conv2d(max(c[0], width), 1, kernel_size=1), nn.Sigmoid())
        # Most of the sky is empty: start from a map near zero rather than 0.5 everywhere.
        nn.init.constant_(self.final[0].bias, -3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"BlobsFinderFCN expects {self.in_channels} input planes, got {x.shape[1]}")
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(f"BlobsFinderFCN expects sides that are multiples of {self.multiple}, got {tuple(x.shape[-2:])}")
        skips = [x]
        for block in self.encoder:
            skips.append(block(skips[-1]))
        h = self.middle(skips.pop())
        for up, merge in zip(self.up, self.merge):
            h = merge(torch.cat([up(h), skips.pop()], dim=1))
        return self.final(h)
