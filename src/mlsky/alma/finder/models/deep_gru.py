"""Deep GRU: spectral focusing of Delli Veneri et al. (2023), Fig. 6.

A standardised dirty spectrum ``(b, n_chan)`` goes through two stacked GRU layers, a fully
connected layer and a sigmoid; the output ``(b, n_chan)`` is the probability that each channel
holds emission. Shapes with the defaults::

    input       [b, n_chan, 1]
    GRU x 2     [b, n_chan, 1]  -> [b, n_chan, 2 * hidden]   (bidirectional)
    FC          [b, n_chan, 2 * hidden] -> [b, n_chan, 1]
    Sigmoid     [b, n_chan]
"""

from __future__ import annotations

import torch
from torch import nn

from mlsky.alma.finder.models import register_model


@register_model("deep_gru")
class DeepGRU(nn.Module):
    """Stacked GRUs + linear + sigmoid marking the emission channels of a spectrum.

    Parameters
    ----------
    hidden
        Hidden units per GRU direction.
    num_layers
        Stacked GRU layers (paper: 2).
    bidirectional
        Read the spectrum both ways, so a channel sees the line on either side of it.

    Examples
    --------
    >>> import torch
    >>> DeepGRU(hidden=8)(torch.zeros(3, 40)).shape
    torch.Size([3, 40])
    """

    version = 1

    def __init__(self, hidden: int = 32, num_layers: int = 2, bidirectional: bool = True):
        super().__init__()
        self.gru = nn.GRU(1, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), 1)

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        if spectra.ndim != 2:
            raise ValueError(f"DeepGRU expects spectra of shape (batch, n_chan), got {tuple(spectra.shape)}")
        out, _ = self.gru(spectra.unsqueeze(-1))
        return torch.sigmoid(self.fc(out)).squeeze(-1)
