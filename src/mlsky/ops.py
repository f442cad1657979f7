"""Small experiments on the Observed Parameter Space (OPS) and what learning machines find in it.

The epistemology chapter of the book runs these: each takes seconds to a minute on a CPU.

- :func:`quasar_photometry` and :func:`projection_scores`: real SDSS quasars are points in a
  5-D photometric space where the redshift is a smooth function, yet no 2-D projection shows it;
- :func:`hidden_law`: a law of n variables whose every 2-D projection is exactly noise;
- :func:`width_sweep` and :func:`sawtooth_network`: universal approximation by width, and
  what depth buys;
- :func:`noisy_labels` and :func:`label_noise_ceiling`: a knowledge base that carries its own
  error caps the accuracy anyone can measure;
- :data:`PLANETS`, :func:`fit_power_law` and :func:`description_length`: a theory as the
  compression of an empirical law (Kepler's third law).

Examples
--------
>>> import numpy as np
>>> from mlsky.ops import label_noise_ceiling
>>> round(label_noise_ceiling(np.zeros(1000, int), sigma_pair=1.8, t_range=(-5, 10)), 3)
0.306
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from astropy import units as u
from astropy.table import Table
from scipy.special import ndtr
from sklearn.base import RegressorMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlsky.photoz.metrics import nmad

#: SDSS writes -9999 (and sometimes 0) for a magnitude it did not measure.
MISSING_MAGNITUDE = (-9999.0, 0.0)


def quasar_photometry(table: Table) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """The 5-D photometric space of quasars: four adjacent PSF colours and the i magnitude.

    Parameters
    ----------
    table
        A DR5Q-like table with ``u_mag ... z_mag`` and the redshift ``z``.

    Returns
    -------
    X : (n, 5) array
        ``u-g, g-r, r-i, i-z, i``.
    z : (n,) array
        Spectroscopic redshift.
    names : list of str
    n_dropped : int
        Rows dropped because a magnitude or the redshift is missing or not finite.
    """
    needed = ["z", *(f"{b}_mag" for b in "ugriz")]
    missing = [c for c in needed if c not in table.colnames]
    if missing:
        raise KeyError(f"the table lacks the column(s) {', '.join(missing)}")
    mags = np.column_stack([np.asarray(table[f"{b}_mag"], float) for b in "ugriz"])
    z = np.asarray(table["z"], float)
    good = np.isfinite(mags).all(1) & ~np.isin(mags, MISSING_MAGNITUDE).any(1) & np.isfinite(z)
    mags, z = mags[good], z[good]
    X = np.column_stack([mags[:, :-1] - mags[:, 1:], mags[:, 3]])
    return X, z, ["u-g", "g-r", "r-i", "i-z", "i"], int((~good).sum())


def projection_scores(
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    dim: int = 2,
    estimator: RegressorMixin | None = None,
    score: Callable[[np.ndarray, np.ndarray], float] = nmad,
    test_size: float = 0.3,
    seed: int = 0,
) -> Table:
    """Score a regressor trained on every ``dim``-feature projection of ``X``, on held-out data.

    The default regressor is a 15-nearest-neighbour regressor on standardised features: it
    reads off whatever a projection shows, with no model of the function behind it.
    ``score(y_true, y_pred)`` follows scikit-learn's order; lower is better (default: the
    photo-z NMAD of :func:`mlsky.photoz.metrics.nmad`).

    Returns
    -------
    astropy.table.Table
        ``features`` and ``score``, one row per projection, best (lowest) first.
    """
    estimator = estimator or make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=15))
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed)
    rows = []
    for cols in itertools.combinations(range(X.shape[1]), dim):
        model = clone(estimator).fit(Xtr[:, cols], ytr)
        rows.append((", ".join(names[c] for c in cols), score(yte, model.predict(Xte[:, cols]))))
    table = Table(rows=rows, names=("features", "score"))
    table.sort("score")
    return table


def network(hidden: Sequence[int] = (64, 64), *, seed: int = 0, max_iter: int = 300, **kwargs) -> RegressorMixin:
    """A small fully connected network (standardised inputs), early-stopped on 10% of the data."""
    mlp = MLPRegressor(hidden_layer_sizes=tuple(hidden), max_iter=max_iter, early_stopping=True,
                       random_state=seed, **kwargs)
    return make_pipeline(StandardScaler(), mlp)


def held_out_score(
    estimator: RegressorMixin,
    X: np.ndarray,
    y: np.ndarray,
    *,
    score: Callable[[np.ndarray, np.ndarray], float] = nmad,
    test_size: float = 0.3,
    seed: int = 0,
) -> float:
    """Fit on a random ``1 - test_size`` of the rows and score on the rest (same split as above)."""
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed)
    return float(score(yte, clone(estimator).fit(Xtr, ytr).predict(Xte)))


def hidden_law(n_samples: int, n_dims: int, *, omega: float = math.pi / 2,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic law of ``n_dims`` variables that no 2-D projection reveals.

    ``y = cos(omega * (x_1 + ... + x_n))`` with every ``x_i`` uniform on [-1, 1]. Averaged
    over the other variables, the law seen in any pair ``(x_i, x_j)`` is
    ``cos(omega (x_i + x_j)) * (sin(omega) / omega) ** (n - 2)``: for ``omega = pi/2`` and
    n = 10 its amplitude is 0.027 of the full law's, so every projection looks like noise.
    """
    if n_dims < 2:
        raise ValueError(f"n_dims must be at least 2, got {n_dims}")
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n_samples, n_dims))
    return X, np.cos(omega * X.sum(axis=1))


def n_parameters(hidden: Sequence[int], n_in: int = 1, n_out: int = 1) -> int:
    """Weights and biases of a fully connected network with the given hidden widths."""
    sizes = [n_in, *hidden, n_out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def width_sweep(
    f: Callable[[np.ndarray], np.ndarray],
    widths: Sequence[int],
    *,
    n_train: int = 2000,
    activation: str = "tanh",
    n_restarts: int = 2,
    domain: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
) -> Table:
    """Test error of one-hidden-layer networks of growing width fitted to ``f`` on ``domain``.

    Each width is fitted with L-BFGS from ``n_restarts`` random starts; the best test error
    is kept, since the question is what the width can represent, not how lucky a start was.

    Returns
    -------
    astropy.table.Table
        ``width``, ``n_params``, ``mse`` (mean squared error on a fine grid, relative to the
        variance of ``f``).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(*domain, size=(n_train, 1))
    grid = np.linspace(*domain, 2001)[:, None]
    target, truth = f(x[:, 0]), f(grid[:, 0])
    rows = []
    for width in widths:
        errors = []
        for start in range(n_restarts):
            mlp = MLPRegressor(hidden_layer_sizes=(width,), activation=activation, solver="lbfgs",
                               max_iter=5000, tol=1e-10, random_state=seed + start)
            errors.append(np.mean((mlp.fit(x, target).predict(grid) - truth) ** 2) / np.var(truth))
        rows.append((width, n_parameters((width,)), float(min(errors))))
    return Table(rows=rows, names=("width", "n_params", "mse"))


def sawtooth(x: np.ndarray, depth: int) -> np.ndarray:
    """The tent map composed ``depth`` times on [0, 1]: 2**(depth-1) teeth, 2**depth - 1 kinks."""
    y = np.asarray(x, float)
    for _ in range(depth):
        y = np.where(y < 0.5, 2 * y, 2 - 2 * y)
    return y


def sawtooth_network(depth: int):
    """A ReLU network of ``depth`` hidden layers of width 2 that computes :func:`sawtooth` exactly.

    Each layer is the tent map ``2 relu(x) - 4 relu(x - 1/2)`` (Telgarsky 2016). A network with
    one hidden layer needs at least ``2**depth - 1`` units for the same function, because it
    has at most one kink per unit; this one has ``6 * depth + 1`` parameters (hidden layers
    of 2 units each, the first with 4 parameters and the others with 6, plus 3 for the output).
    """
    import torch
    from torch import nn

    def linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
        layer = nn.Linear(len(weight[0]), len(weight)).double()
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(weight))
            layer.bias.copy_(torch.tensor(bias))
        return layer

    # Hidden units relu(y) and relu(y - 1/2) of the previous tent output y = 2 h1 - 4 h2.
    layers: list[nn.Module] = [linear([[1.0], [1.0]], [0.0, -0.5]), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [linear([[2.0, -4.0], [2.0, -4.0]], [0.0, -0.5]), nn.ReLU()]
    layers.append(linear([[2.0, -4.0]], [0.0]))
    return nn.Sequential(*layers)


def toy_morphology(n_samples: int, *, n_features: int = 4, t_range: tuple[int, int] = (-5, 10),
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for galaxies whose true T-type is a known function of measured features.

    Real galaxies carry no true T-type to compare with, so this thought experiment makes one:
    ``T = round(2.5 + 3 x_1 + 1.5 x_2 x_3)`` of standard normal features, clipped to the
    range of the revised Hubble types.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    t = np.rint(2.5 + 3 * X[:, 0] + 1.5 * X[:, 1] * X[:, 2])
    return X, np.clip(t, *t_range).astype(int)


def noisy_labels(t_true: np.ndarray, sigma: float, *, t_range: tuple[int, int] = (-5, 10),
                 seed: int = 0) -> np.ndarray:
    """Integer labels as one classifier would give them: true type plus Gaussian error, rounded."""
    rng = np.random.default_rng(seed)
    noisy = np.rint(np.asarray(t_true, float) + rng.normal(0, sigma, size=np.shape(t_true)))
    return np.clip(noisy, *t_range).astype(int)


def label_noise_ceiling(t_true: np.ndarray, *, sigma_pair: float = 1.8,
                        t_range: tuple[int, int] = (-5, 10)) -> float:
    """The highest accuracy any classifier can *measure* against labels given by one expert.

    Naim et al. (1995) found that two experts' T-types differ by ``sigma_pair`` ≈ 1.8 rms. If
    each expert adds independent Gaussian error, one expert's error is
    ``sigma = sigma_pair / sqrt(2)``. A perfect classifier predicts the true type ``t``; the
    test label agrees with it when the rounded, clipped ``t + error`` equals ``t``. The mean
    of that probability over the test objects is the ceiling.
    """
    t = np.asarray(t_true, float)
    sigma = sigma_pair / math.sqrt(2)
    lo = np.where(t <= t_range[0], -np.inf, t - 0.5)
    hi = np.where(t >= t_range[1], np.inf, t + 0.5)
    return float(np.mean(ndtr((hi - t) / sigma) - ndtr((lo - t) / sigma)))


def label_noise_rms_floor(sigma_pair: float = 1.8) -> float:
    """The rms error a perfect classifier still shows against one expert's labels."""
    return sigma_pair / math.sqrt(2)


#: Semi-major axes and sidereal orbital periods of the planets (NASA Planetary Fact Sheet),
#: and three bodies kept back to test the law's predictions.
PLANETS = Table(
    {
        "name": ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"],
        "a": [0.387, 0.723, 1.000, 1.524, 5.203, 9.537, 19.191, 30.069] * u.AU,
        "period": [0.2408, 0.6152, 1.0000, 1.8809, 11.862, 29.457, 84.011, 164.79] * u.yr,
    }
)
HELD_OUT_BODIES = Table(
    {
        "name": ["Ceres", "Pluto", "1P/Halley"],
        "a": [2.7675, 39.482, 17.834] * u.AU,
        "period": [4.60, 247.94, 75.32] * u.yr,
    }
)


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of ``log10 y = log10 A + k log10 x``; returns ``(A, k)``."""
    k, log_a = np.polyfit(np.log10(x), np.log10(y), 1)
    return float(10**log_a), float(k)


def description_length(values: np.ndarray, precision: float) -> float:
    """Bits to write ``values`` as integer multiples of ``precision`` (sign included).

    A crude but honest code length: each value costs ``log2(2 |v| / precision + 1)`` bits.
    """
    return float(np.sum(np.log2(2 * np.abs(np.asarray(values, float)) / precision + 1)))
