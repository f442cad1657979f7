"""Photometric redshifts of quasars by forward feature selection (D'Isanto et al. 2018).

- :mod:`mlsky.photoz.features` -- the feature space: magnitudes, errors, extinction and
  every pairwise colour, with readable names;
- :class:`ForwardSelector` -- kNN-driven forward selection, exact and fast, and
  :func:`selection_frequency`, its stability over resamples;
- :mod:`mlsky.photoz.metrics` -- NMAD, outlier fraction, bias, CRPS, and their plot.
"""

from mlsky.photoz.metrics import SCORERS, bias, crps, eta, nmad, plot_predicted_vs_true
from mlsky.photoz.selection import ForwardSelector, selection_frequency

__all__ = ["SCORERS", "ForwardSelector", "bias", "crps", "eta", "nmad", "plot_predicted_vs_true", "selection_frequency"]
