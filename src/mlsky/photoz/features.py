"""The photometric feature space of D'Isanto et al. (2018): magnitudes, errors, colours.

From a table of magnitudes of several types (PSF, model, Petrosian, fibre, cModel...) in
several bands, :func:`build_features` makes every magnitude, its error, the extinction and
every pairwise colour, within and across types, with readable names: ``u_psf``,
``sig_u_psf``, ``ext_u``, ``u_psf-g_psf``, ``i_psf-z_model``. :func:`derived_features`
expands a single-type catalogue (the offline DR5Q has PSF magnitudes only) into the
hundreds of candidates of the paper's regime, each named for what it is computed from.

Redshift-derived columns (the absolute magnitude ``Mp`` of DR5Q, any ``z``) are refused:
a feature made from the target leaks it.

Examples
--------
>>> from astropy.table import Table
>>> t = Table({"u_mag": [19.0, 20.1], "g_mag": [18.7, 19.9], "sig_u_mag": [0.03, 0.05],
...            "sig_g_mag": [0.02, 0.03], "z": [1.2, 2.3]})
>>> space = build_features(t, {"psf": ("{band}_mag", "sig_{band}_mag")}, bands="ug")
>>> space.features.colnames
['u_psf', 'g_psf', 'sig_u_psf', 'sig_g_psf', 'u_psf-g_psf']
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

#: Columns computed from the spectroscopic redshift: never features.
TARGET_DERIVED = frozenset({"mp", "mi", "m_i", "mi_z2", "z", "zspec", "z_spec", "redshift", "z_qso"})
#: Magnitude values SDSS uses for "no measurement".
MISSING_MAGNITUDES = (-9999.0, 0.0)
#: Largest |magnitude| that is a measurement (the faintest sources are ~30 mag); beyond it,
#: a value is a flag or a damaged row, and its squares would overflow derived features.
MAX_ABS_MAGNITUDE = 100.0
#: Values from this size on are fill values (astropy fills masked floats with 1e20), not data.
FILL_VALUE_FLOOR = 1e20
#: The DR5Q catalogue's PSF magnitudes and errors, in the notation of build_features.
DR5Q_TYPES = {"psf": ("{band}_mag", "sig_{band}_mag")}
#: The DR5Q radio and X-ray columns, used as they are.
DR5Q_EXTRA = ("FIRST", "ROSAT")


@dataclass
class FeatureSpace:
    """Features of the objects kept, their redshifts, and what was dropped.

    Attributes
    ----------
    features : astropy.table.Table
        One column per feature, one row per kept object.
    z : numpy.ndarray or None
        The target of the kept rows (None when no target column was named).
    kept : numpy.ndarray of bool
        Which rows of the input table were kept.
    n_dropped : int
        Rows dropped for a missing or non-finite magnitude or error.
    """

    features: Table
    z: np.ndarray | None
    kept: np.ndarray
    n_dropped: int

    @property
    def names(self) -> list[str]:
        """The feature names, in column order."""
        return list(self.features.colnames)

    @property
    def n_features(self) -> int:
        """The number of features."""
        return len(self.features.colnames)

    def n_subsets(self, k: int = 10) -> int:
        """C(n, k): the number of different sets of ``k`` features (the search space)."""
        return math.comb(self.n_features, k)

    def to_numpy(self) -> np.ndarray:
        """The features as a float64 array of shape (n_objects, n_features)."""
        return np.column_stack([np.asarray(self.features[c], dtype=np.float64) for c in self.features.colnames])


def _refuse_target(names) -> None:
    leaks = [n for n in names if n.lower() in TARGET_DERIVED]
    if leaks:
        raise ValueError(
            f"column(s) {', '.join(leaks)} are the redshift or computed from it (e.g. DR5Q's Mp, "
            "the absolute magnitude from z): a feature made from the target leaks it. Leave them out."
        )


def _column(table: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The values of column ``name`` as float64, and which of them are masked."""
    if name not in table.colnames:
        source = table.meta.get("source", "the table")
        raise KeyError(f"{source} has no column {name!r} (columns: {', '.join(table.colnames)}).")
    column = table[name]
    masked = np.ma.getmaskarray(column)
    # The data under a mask (a fill value such as 1e20) is never a measurement: NaN stands in.
    values = np.where(masked, np.nan, np.ma.getdata(column).astype(np.float64))
    return values, masked


def build_features(table: Table, types: dict[str, tuple[str, str | None]], *, bands: str = "ugriz",
                   extinction: str | None = None, extra: tuple[str, ...] = (), target: str | None = "z",
                   missing: tuple[float, ...] = MISSING_MAGNITUDES) -> FeatureSpace:
    """All magnitudes, errors, extinctions and pairwise colours of a photometric table.

    Parameters
    ----------
    table : astropy.table.Table
        The catalogue.
    types : dict
        Magnitude type name -> (magnitude column template, error column template or None),
        templates with ``{band}``: ``{"psf": ("psfMag_{band}", "psfMagErr_{band}"),
        "model": ("modelMag_{band}", "modelMagErr_{band}")}``.
    bands : str
        The bands, blue to red.
    extinction : str, optional
        Template of the Galactic extinction columns (``extinction_{band}``).
    extra : tuple of str
        Further columns used as they are (e.g. ``FIRST``, ``ROSAT``).
    target : str, optional
        The redshift column, returned as ``z`` (never a feature).
    missing : tuple of float
        Magnitude values meaning "not measured" (SDSS: -9999 and 0).

    Returns
    -------
    FeatureSpace
        Rows with a masked value, a "not measured" magnitude, a magnitude beyond
        :data:`MAX_ABS_MAGNITUDE`, a fill value (:data:`FILL_VALUE_FLOOR`), a negative error
        or a non-finite value (redshift included) are dropped and counted (a warning gives
        the count of each reason), never imputed.

    Raises
    ------
    KeyError
        A required column is missing (the message names it).
    ValueError
        A target-derived column (``Mp``, ``z``...) is asked for as a feature.
    """
    _refuse_target([tpl.format(band=b) for mag, err in types.values() for tpl in (mag, err) if tpl
                    for b in bands] + list(extra))
    mag_cols = {f"{b}_{kind}": mag.format(band=b) for kind, (mag, _) in types.items() for b in bands}
    err_cols = {f"sig_{b}_{kind}": err.format(band=b) for kind, (_, err) in types.items() if err for b in bands}
    ext_cols = {f"ext_{b}": extinction.format(band=b) for b in bands} if extinction else {}
    read = {ours: _column(table, theirs)
            for ours, theirs in (mag_cols | err_cols | ext_cols | {name: name for name in extra}).items()}
    if target:
        z_values, z_masked = _column(table, target)
    values = {name: v for name, (v, _) in read.items()}
    mags = {name: values[name] for name in mag_cols}
    masked = np.any([m for _, m in read.values()] + ([z_masked] if target else []), axis=0)
    nobody = np.zeros(len(table), dtype=bool)
    # Why rows are dropped, in order: each dropped row is counted under its first reason.
    reasons = {
        "a masked value": masked,
        f"a 'not measured' magnitude ({', '.join(f'{v:g}' for v in missing)})":
            np.any([np.isin(v, missing) for v in mags.values()], axis=0),
        f"a magnitude beyond ±{MAX_ABS_MAGNITUDE:g}": np.any([np.abs(v) > MAX_ABS_MAGNITUDE for v in mags.values()], axis=0),
        f"a fill value (|x| >= {FILL_VALUE_FLOOR:g})": np.any([np.abs(v) >= FILL_VALUE_FLOOR for v in values.values()], axis=0),
        "a negative error": np.any([values[name] < 0 for name in err_cols], axis=0) if err_cols else nobody,
        "a non-finite value": ~masked & np.any([~np.isfinite(v) for v in values.values()]
                                               + ([~np.isfinite(z_values)] if target else []), axis=0),
    }
    bad = np.any(list(reasons.values()), axis=0)
    kept = ~bad
    n_dropped = int(bad.sum())
    if n_dropped:
        counted = np.zeros(len(table), dtype=bool)
        parts = []
        for why, rows in reasons.items():
            if (first := rows & ~counted).any():
                parts.append(f"{int(first.sum())} with {why}")
            counted |= rows
        warnings.warn(f"build_features: dropped {n_dropped} of {len(table)} objects ({', '.join(parts)}).",
                      stacklevel=2)
    out = Table()
    for name, column in values.items():
        out[name] = column[kept]
    for (a, va), (b, vb) in itertools.combinations(mags.items(), 2):
        out[f"{a}-{b}"] = (va - vb)[kept]
    out.meta["n_dropped"] = n_dropped
    z = z_values[kept] if target else None
    return FeatureSpace(out, z, kept, n_dropped)


def dr5q_features(table: Table, *, derived: bool = False) -> FeatureSpace:
    """The feature space of the offline DR5Q catalogue (PSF ugriz, errors, FIRST, ROSAT).

    ``derived=False``: the 22 native features (5 magnitudes, 5 errors, FIRST, ROSAT and the
    10 pairwise colours). ``derived=True``: those plus :func:`derived_features`, 207 in all.
    """
    space = build_features(table, DR5Q_TYPES, extra=DR5Q_EXTRA)
    if derived:
        space.features = derived_features(space.features, [f"{b}_psf" for b in "ugriz"])
    return space


def dr16q_features(table: Table) -> FeatureSpace:
    """The feature space of :func:`mlsky.data.sdss.load_dr16q`: five magnitude kinds.

    25 magnitudes, 25 errors, 5 extinctions and the 300 pairwise colours within and across
    the PSF, model, Petrosian, fibre and cModel magnitudes: 355 features.
    """
    from mlsky.data.sdss import DR16_MAGNITUDES

    types = {kind: (f"{mag}_{{band}}", f"{err}_{{band}}") for kind, (mag, err) in DR16_MAGNITUDES.items()}
    return build_features(table, types, extinction="extinction_{band}", target="zspec")


def derived_features(features: Table, magnitudes: list[str]) -> Table:
    """Add features computed from magnitudes, their errors and colours (names say how).

    A single-type catalogue gives tens of features; the paper searched hundreds. These are
    all computed from the same measurements, so they add no new information, only new
    coordinates, which is exactly what a kNN search is sensitive to:

    - ``(a-b)^2`` squared colours and ``(a-b)*(c-d)`` products of colours;
    - ``a*(b-c)`` magnitude times colour, ``a*b`` and ``a^2`` magnitude products;
    - ``sig(a-b)`` colour errors, ``(a-b)/sig(a-b)`` colour significances;
    - ``f_b/f_a`` flux ratios 10^(-0.4 (b - a)); ``(a-b)-(b-c)`` colour curvatures;
    - ``log10(sig_a)``, ``sig_a/sig_b``; ``mean_mag`` and ``a-mean_mag``.
    """
    out = features.copy(copy_data=True)
    m = {a: np.asarray(features[a], dtype=np.float64) for a in magnitudes}
    s = {a: np.asarray(features[f"sig_{a}"], dtype=np.float64) for a in magnitudes}
    pairs = list(itertools.combinations(magnitudes, 2))
    colours = {f"{a}-{b}": m[a] - m[b] for a, b in pairs}
    colour_errs = {f"{a}-{b}": np.hypot(s[a], s[b]) for a, b in pairs}
    for name, c in colours.items():
        out[f"({name})^2"] = c**2
    for (n1, c1), (n2, c2) in itertools.combinations(colours.items(), 2):
        out[f"({n1})*({n2})"] = c1 * c2
    for a in magnitudes:
        for name, c in colours.items():
            out[f"{a}*({name})"] = m[a] * c
    for a, b in itertools.combinations_with_replacement(magnitudes, 2):
        out[f"{a}^2" if a == b else f"{a}*{b}"] = m[a] * m[b]
    for name, err in colour_errs.items():
        out[f"sig({name})"] = err
        out[f"({name})/sig({name})"] = colours[name] / err
    for a, b in pairs:
        out[f"f_{b}/f_{a}"] = 10.0 ** (-0.4 * (m[b] - m[a]))
    for a, b, c in itertools.combinations(magnitudes, 3):
        out[f"({a}-{b})-({b}-{c})"] = (m[a] - m[b]) - (m[b] - m[c])
    for a in magnitudes:
        out[f"log10(sig_{a})"] = np.log10(s[a])
    for a, b in pairs:
        out[f"sig_{a}/sig_{b}"] = s[a] / s[b]
    mean = np.mean([m[a] for a in magnitudes], axis=0)
    out["mean_mag"] = mean
    for a in magnitudes:
        out[f"{a}-mean_mag"] = m[a] - mean
    return out
