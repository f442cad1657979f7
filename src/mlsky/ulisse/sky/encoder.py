"""A small residual CNN that turns a galaxy stamp into a feature vector.

The network takes the same 224 x 224 stamp in [0, 1] as the ImageNet backbones (so the
extraction pipeline is unchanged), keeps its central :attr:`SkyEncoder.crop` (a Galaxy Zoo
galaxy fills about a third of the stamp; the rest is sky and other sources), averages that down
to :attr:`SkyEncoder.resolution` pixels (area averaging: what a coarser camera would see),
normalises it with the per-channel mean and
spread of the training stamps, and runs a stem and four residual stages (32-64-128-256
channels by default, each halving the resolution). The global average of the last map is the
feature vector.

Examples
--------
>>> import torch
>>> from mlsky.ulisse.sky.encoder import SkyEncoder
>>> encoder = SkyEncoder().eval()
>>> encoder(torch.rand(2, 3, 224, 224)).shape
torch.Size([2, 256])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3 x 3 convolutions with batch norms and a shortcut (a 1 x 1 projection when the shape changes)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SkyEncoder(nn.Module):
    """Residual CNN for galaxy stamps: (N, 3, H, W) in [0, 1] -> (N, ``widths[-1]``) features.

    Parameters
    ----------
    widths
        Channels of the four stages; the stem has ``widths[0]`` and halves the resolution, each
        later stage halves it again.
    resolution
        Side (pixels) that the input is area-averaged to before the stem.
    crop
        Fraction of the input's side kept, around its centre, before averaging.
    mean, std
        Per-channel statistics of the training stamps (inputs are standardised with them).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), resolution: int = 64, crop: float = 1.0,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)):
        super().__init__()
        if not 0 < crop <= 1:
            raise ValueError(f"crop={crop}; keep a fraction in (0, 1] of the stamp.")
        self.widths, self.resolution, self.crop = tuple(int(w) for w in widths), int(resolution), float(crop)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(3, self.widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(self.widths[0]),
                                  nn.ReLU(inplace=True))
        blocks, previous = [], self.widths[0]
        for i, width in enumerate(self.widths):
            blocks.append(ResidualBlock(previous, width, stride=1 if i == 0 else 2))
            previous = width
        self.stages = nn.ModuleList(blocks)

    @property
    def num_features(self) -> int:
        """Length of the feature vector (channels of the last stage)."""
        return self.widths[-1]

    @property
    def config(self) -> dict:
        """Constructor arguments (what an exported file records to rebuild the network)."""
        return {"widths": list(self.widths), "resolution": self.resolution, "crop": self.crop,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """Keep the central :attr:`crop`, area-average to :attr:`resolution` pixels, standardise per channel.

        A batch already of :attr:`resolution` pixels is taken as cropped (the training views are).
        """
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            h, w = x.shape[-2:]
            kh, kw = round(h * self.crop), round(w * self.crop)
            x = x[..., (h - kh) // 2:(h - kh) // 2 + kh, (w - kw) // 2:(w - kw) // 2 + kw]
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        return (x - self.mean) / self.std

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps of the second and third stages and of the last (``head``) for a [0, 1] batch.

        Shapes for the default widths: ``stage2`` (N, 64, 16, 16), ``stage3`` (N, 128, 8, 8),
        ``head`` (N, 256, 4, 4).
        """
        x = self.stem(self.standardise(x))
        maps = {}
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            maps["head" if i == len(self.stages) else f"stage{i}"] = x
        maps.pop("stage1")
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the last map: the feature vector."""
        return self.feature_maps(x)["head"].mean(dim=(2, 3))
