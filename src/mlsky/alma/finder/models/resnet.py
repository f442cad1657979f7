"""ResNet-18-like regressor of the parameter battery, Delli Veneri et al. (2023), Fig. 8.

One network per parameter (FWHMx, FWHMy, position angle, flux). With ``width=64`` (the
paper) the shapes for a 32 x 32 cutout are::

    stem        conv k3 s1 -> max-pool 2 -> BatchNorm -> ReLU    [b, 1, 32, 32] -> [b, 64, 16, 16]
    layer 1     2 residual blocks                                 -> [b, 64, 16, 16]
    layer 2     2 residual blocks, stride 2                       -> [b, 128, 8, 8]
    layer 3     2 residual blocks, stride 2                       -> [b, 256, 4, 4]
    layer 4     2 residual blocks, stride 2                       -> [b, 512, 2, 2]
    head        adaptive max-pool -> FC 512 -> 512 -> ReLU -> FC 512 -> out_features

Smaller ``width`` keeps the plan and divides every channel count (for CPU scales).
"""

from __future__ import annotations

import torch
from torch import nn

from mlsky.alma.finder.models import register_model


class ResidualBlock(nn.Module):
    """Two conv k3 + BatchNorm layers with an identity (or 1x1 projection) shortcut (Fig. 7)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


@register_model("resnet18")
class ResNet18(nn.Module):
    """Cutout ``(b, 1, H, W)`` -> ``(b, out_features)`` regression (ResNet-18-like).

    Parameters
    ----------
    width
        Channels of the first stage (paper: 64, giving a 512-element latent vector).
    out_features
        Outputs (1 for a scalar parameter; 2 for an angle as cos/sin pair).

    Examples
    --------
    >>> import torch
    >>> ResNet18(width=8)(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 1])
    """

    version = 1

    def __init__(self, width: int = 64, out_features: int = 1):
        super().__init__()
        w = (width, 2 * width, 4 * width, 8 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(1, w[0], 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
        )
        self.layers = nn.Sequential(
            *[
                nn.Sequential(
                    ResidualBlock(w[max(i - 1, 0)], w[i], stride=1 if i == 0 else 2),
                    ResidualBlock(w[i], w[i]),
                )
                for i in range(4)
            ]
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(nn.Linear(w[3], w[3]), nn.ReLU(inplace=True), nn.Linear(w[3], out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.layers(self.stem(x))).flatten(1))
