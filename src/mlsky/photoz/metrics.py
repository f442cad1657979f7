"""Photometric-redshift quality metrics (D'Isanto et al. 2018, Sect. 4) and their plot.

All metrics work on the normalised residual :math:`\\Delta z / (1 + z)`, with
:math:`\\Delta z = z_{\\rm phot} - z_{\\rm spec}`. Lower is better for every metric; the
scikit-learn scorers in :data:`SCORERS` negate them ("higher is better"), exactly as
``make_scorer(..., greater_is_better=False)`` does.

Examples
--------
>>> import numpy as np
>>> from mlsky.photoz.metrics import nmad, eta
>>> z = np.array([1.0, 2.0, 3.0]); zp = np.array([1.02, 2.0, 3.9])
>>> round(float(eta(z, zp)), 3)
0.333
"""

from __future__ import annotations

import numpy as np
from astropy.stats import mad_std
from scipy import stats
from sklearn.metrics import make_scorer

#: |Δz|/(1+z) above which a photometric redshift is a catastrophic outlier.
OUTLIER_THRESHOLD = 0.15
#: Scale factor that makes the median absolute deviation estimate a Gaussian sigma, 1 / Phi^-1(3/4):
#: :func:`astropy.stats.mad_std`'s, for the bounds on the score that forward selection computes.
NMAD_SCALE = float(1.0 / stats.norm.ppf(0.75))


def normalised_residual(z_true, z_pred) -> np.ndarray:
    """Δz/(1+z) = (z_pred - z_true) / (1 + z_true)."""
    z_true = np.asarray(z_true, dtype=np.float64)
    return (np.asarray(z_pred, dtype=np.float64) - z_true) / (1.0 + z_true)


def nmad(z_true, z_pred) -> float:
    """Normalised median absolute deviation: 1.4826 median(|dz - median(dz)|), dz = Δz/(1+z)
    (:func:`astropy.stats.mad_std`)."""
    return float(mad_std(normalised_residual(z_true, z_pred)))


def eta(z_true, z_pred, threshold: float = OUTLIER_THRESHOLD) -> float:
    """Outlier fraction: the share of objects with |Δz|/(1+z) > ``threshold`` (0.15)."""
    return float(np.mean(np.abs(normalised_residual(z_true, z_pred)) > threshold))


def bias(z_true, z_pred) -> float:
    """Mean of Δz/(1+z)."""
    return float(np.mean(normalised_residual(z_true, z_pred)))


def crps_per_object(z_true, z_samples) -> np.ndarray:
    """CRPS of each object's ensemble (e.g. its k neighbours' z); :func:`crps` is their mean.

    For each object the predictive distribution is the empirical one of its samples
    :math:`s_1..s_k`: :math:`{\\rm CRPS} = \\overline{|s_i - z|} - \\frac{1}{2k^2}\\sum_{ij}|s_i - s_j|`
    (Gneiting & Raftery 2007), in units of redshift.

    Parameters
    ----------
    z_true : array of shape (n,)
    z_samples : array of shape (n, k)
    """
    z_true = np.asarray(z_true, dtype=np.float64)
    s = np.sort(np.asarray(z_samples, dtype=np.float64), axis=1)
    k = s.shape[1]
    spread_to_truth = np.mean(np.abs(s - z_true[:, None]), axis=1)
    # sum_ij |s_i - s_j| over sorted samples = 2 sum_i (2i - k + 1) s_i (i from 0)
    weights = 2.0 * np.arange(k) - k + 1.0
    pair_spread = 2.0 * (s @ weights) / k**2
    return spread_to_truth - 0.5 * pair_spread


def crps(z_true, z_samples) -> float:
    """Mean continuous ranked probability score of ensembles: see :func:`crps_per_object`."""
    return float(np.mean(crps_per_object(z_true, z_samples)))


def summary(z_true, z_pred) -> dict[str, float]:
    """NMAD, η and bias of a set of point predictions, as a dict."""
    return {"nmad": nmad(z_true, z_pred), "eta": eta(z_true, z_pred), "bias": bias(z_true, z_pred)}


#: scikit-learn scorers (higher is better) of the point-estimate metrics, by name.
SCORERS = {
    "nmad": make_scorer(nmad, greater_is_better=False),
    "eta": make_scorer(eta, greater_is_better=False),
}


def plot_predicted_vs_true(z_true, z_pred, ax=None, *, title: str | None = None, zmax: float | None = None):
    """Scatter (density) plot of photometric against spectroscopic redshift.

    Draws the identity line and the outlier limits |Δz|/(1+z) = 0.15, and writes NMAD
    and η in the corner. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    z_true = np.asarray(z_true, dtype=np.float64)
    z_pred = np.asarray(z_pred, dtype=np.float64)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    top = zmax if zmax is not None else float(max(z_true.max(), z_pred.max()))
    ax.hexbin(z_true, z_pred, gridsize=70, extent=(0, top, 0, top), bins="log", cmap="viridis", mincnt=1)
    line = np.linspace(0, top, 50)
    ax.plot(line, line, "w-", lw=1)
    for sign in (-1, 1):
        ax.plot(line, line + sign * OUTLIER_THRESHOLD * (1 + line), "w--", lw=0.8)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="spectroscopic z", ylabel="photometric z")
    ax.text(0.04, 0.96, f"NMAD = {nmad(z_true, z_pred):.4f}\nη = {eta(z_true, z_pred):.3f}",
            transform=ax.transAxes, va="top", color="w", fontsize=9)
    if title:
        ax.set_title(title)
    return ax
