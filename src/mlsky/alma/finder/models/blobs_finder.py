"""Blobs Finder: the convolutional autoencoder of Delli Veneri et al. (2023), Table 3.

Shapes for the paper's 256 x 256 input (``b`` is the batch size)::

    Conv Block 1    [b, 1, 256, 256] -> [b, 8, 128, 128]     conv k3 s2, LeakyReLU, BatchNorm
    Conv Block 2    [b, 8, 128, 128] -> [b, 16, 64, 64]
    Conv Block 3    [b, 16, 64, 64]  -> [b, 32, 32, 32]
    Conv Block 4    [b, 32, 32, 32]  -> [b, 64, 16, 16]
    Conv Block 5    [b, 64, 16, 16]  -> [b, 64, 16, 16]      conv k3 s1
    FC 1            [b, 64*16*16]    -> [b, 1024]
    ---------------------------------------------------------------------------------
    FC 2            [b, 1024]        -> [b, 64*16*16]
    DeConv Block 1  [b, 64, 16, 16]  -> [b, 32, 32, 32]      bilinear x2 || tconv k3 s2, concat, conv
    DeConv Block 2  [b, 32, 32, 32]  -> [b, 16, 64, 64]
    DeConv Block 3  [b, 16, 64, 64]  -> [b, 8, 128, 128]
    DeConv Block 4  [b, 8, 128, 128] -> [b, 1, 256, 256]
    Final Block     [b, 1, 256, 256] -> [b, 1, 256, 256]     conv k3 s1, conv k1, sigmoid

``input_size`` scales every spatial size by the same factor (the bottleneck is
``input_size / 16``), so smaller cubes at the ``ci`` and ``laptop`` scales keep the layer plan.
"""

from __future__ import annotations

import torch
from torch import nn

from mlsky.alma.finder.models import register_model

ENCODER_CHANNELS = (1, 8, 16, 32, 64)


def conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Conv k3 -> LeakyReLU -> BatchNorm, the unit of the encoder (paper's order)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1),
        nn.LeakyReLU(0.2),
        nn.BatchNorm2d(c_out),
    )


class DeconvBlock(nn.Module):
    """Doubles the size through two branches, concatenated, then a conv block.

    The fixed branch upsamples bilinearly; the learnable one is a transposed convolution
    (k3, s2). Their concatenation goes through a stride-1 conv block to ``c_out`` channels.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.LeakyReLU(0.2),
            nn.BatchNorm2d(c_in),
        )
        self.learned_upsample = nn.Sequential(
            nn.ConvTranspose2d(c_in, c_in, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.LeakyReLU(0.2),
            nn.BatchNorm2d(c_in),
        )
        self.merge = conv_block(2 * c_in, c_out, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([self.upsample(x), self.learned_upsample(x)], dim=1))


@register_model("blobs_finder")
class BlobsFinder(nn.Module):
    """Integrated dirty image ``(b, 1, N, N)`` -> source probability map ``(b, 1, N, N)``.

    Parameters
    ----------
    input_size
        Side ``N`` of the square input, a multiple of 16 (paper: 256).
    latent
        Width of the fully connected bottleneck (paper: 1024).

    Examples
    --------
    >>> import torch
    >>> net = BlobsFinder(input_size=64)
    >>> net(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 1, 64, 64])
    """

    version = 1

    def __init__(self, input_size: int = 256, latent: int = 1024):
        super().__init__()
        if input_size % 16 or input_size < 16:
            raise ValueError(f"BlobsFinder input_size must be a multiple of 16, got {input_size}")
        self.input_size = input_size
        self.bottleneck = input_size // 16
        c = ENCODER_CHANNELS
        self.encoder = nn.Sequential(
            *[conv_block(c[i], c[i + 1], stride=2) for i in range(4)],
            conv_block(c[4], c[4], stride=1),
        )
        flat = c[4] * self.bottleneck**2
        self.fc1 = nn.Linear(flat, latent)
        self.fc2 = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(*[DeconvBlock(c[i], c[i - 1]) for i in range(4, 0, -1)])
        self.final = nn.Sequential(
            nn.Conv2d(1, 1, kernel_size=3, stride=1, padding=1),
            nn.Conv2d(1, 1, kernel_size=1),
            nn.Sigmoid(),
        )
        # Most of the sky is empty: start from a map near zero rather than 0.5 everywhere.
        nn.init.constant_(self.final[1].bias, -3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"BlobsFinder expects {self.input_size}x{self.input_size} images, got {tuple(x.shape[-2:])}"
            )
        z = self.encoder(x)
        z = self.fc2(self.fc1(z.flatten(1))).view(-1, ENCODER_CHANNELS[4], self.bottleneck, self.bottleneck)
        return self.final(self.decoder(z))
