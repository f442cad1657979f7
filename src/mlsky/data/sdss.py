"""The SDSS DR5 quasar catalogue (Schneider et al. 2007): loader and online fetch.

Examples
--------
>>> from mlsky.data.sdss import load_dr5q
>>> qso = load_dr5q()                      # doctest: +SKIP
>>> len(qso), qso["z"].unit                # doctest: +SKIP
(77429, Unit(dimensionless))
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from mlsky.data import DataCorruptError, locate

DR5Q_FILE = "SDSS_QSO.tab.gz"
BANDS = "ugriz"
DR5Q_COLUMNS = (
    "SDSS", "z",
    *[c for b in BANDS for c in (f"{b}_mag", f"sig_{b}_mag")],
    "FIRST", "ROSAT", "Mp",
)
# Mp is the absolute i magnitude computed from the redshift: a feature made from it leaks z.
TARGET_DERIVED = ("Mp",)


def read_dr5q(path: Path) -> Table:
    """Read the DR5Q table file (whitespace separated, one header line) with units.

    Raises
    ------
    DataCorruptError
        If the file cannot be parsed or lacks a column, naming the file and the column.
    """
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as fh:
            table = Table.read(fh.read(), format="ascii.basic", guess=False)
    except Exception as err:
        raise DataCorruptError(f"{path} is not a readable DR5Q table: {err}") from err
    missing = [c for c in DR5Q_COLUMNS if c not in table.colnames]
    if missing:
        raise DataCorruptError(f"{path} lacks the column(s) {', '.join(missing)} of the DR5Q table.")
    for b in BANDS:
        table[f"{b}_mag"].unit = u.mag
        table[f"sig_{b}_mag"].unit = u.mag
    table["FIRST"].unit = u.mJy
    table["FIRST"].description = "FIRST peak flux density (0 = not detected)"
    table["ROSAT"].description = "ROSAT log count rate (-9 = not detected)"
    table["Mp"].unit = u.mag
    table["Mp"].description = "absolute i magnitude computed from z: never a feature"
    table["z"].description = "spectroscopic redshift"
    table.meta["title"] = "SDSS DR5 quasar catalogue (Schneider et al. 2007)"
    table.meta["source"] = str(path)
    return table


def load_dr5q(n: int | None = None, *, seed: int = 0, online: bool = True) -> Table:
    """The SDSS DR5 quasar catalogue as an astropy Table (PSF ugriz magnitudes, errors, z).

    Parameters
    ----------
    n
        Return a random subset of ``n`` quasars (drawn with ``seed``), or all when None.
    seed
        Seed of the subset.
    online
        Fetch from VizieR (VII/252) when no offline copy is found.

    Returns
    -------
    astropy.table.Table
        Columns ``SDSS, z, u_mag, sig_u_mag, ..., z_mag, sig_z_mag, FIRST, ROSAT, Mp``.
        ``Mp`` is derived from ``z``: never use it as a feature.
    """
    table = read_dr5q(locate("sdss_dr5q", online=online) / DR5Q_FILE)
    if n is not None:
        if not 0 < n <= len(table):
            raise ValueError(f"n={n} quasars asked for; the catalogue has {len(table)}.")
        rows = np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))
        table = table[rows]
    return table


def fetch_dr5q(dest: Path) -> None:
    """Fetch VizieR VII/252 and write it in the layout of the offline copy (``SDSS_QSO.tab.gz``).

    VizieR names the columns ``umag``, ``e_umag``... and the absolute magnitude ``Mi``;
    they are renamed to the offline copy's names so that one reader serves both.
    """
    from astroquery.vizier import Vizier

    catalogs = Vizier(columns=["**"], row_limit=-1).get_catalogs("VII/252")
    if len(catalogs) == 0:
        raise ConnectionError("VizieR returned no table for VII/252")
    viz = catalogs[0]
    names = {"SDSS": "SDSS", "z": "z", "FIRST": "FIRST", "ROSAT": "ROSAT", "Mp": "Mi"}
    for b in BANDS:
        names[f"{b}_mag"] = f"{b}mag"
        names[f"sig_{b}_mag"] = f"e_{b}mag"
    missing = [v for v in names.values() if v not in viz.colnames]
    if missing:
        raise KeyError(f"VizieR VII/252 has no column(s) {missing}; found {viz.colnames}")
    # The offline copy marks non-detections with 0 (FIRST) and -9 (ROSAT); VizieR masks them.
    fill = {"FIRST": 0.0, "ROSAT": -9.0}
    out = Table()
    for ours, theirs in names.items():
        column = viz[theirs]
        out[ours] = column.filled(fill.get(ours, np.nan)) if hasattr(column, "filled") else column
    with gzip.open(dest / DR5Q_FILE, "wt") as fh:
        out.write(fh, format="ascii.basic")
