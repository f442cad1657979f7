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
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from mlsky.data import DataCorruptError, locate, skyserver

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


def fetch_dr5q(dest: Path, *, vizier_server: str | None = None) -> None:
    """Fetch VizieR VII/252 and write it in the layout of the offline copy (``SDSS_QSO.tab.gz``).

    VizieR names the columns ``umag``, ``e_umag``... and the absolute magnitude ``Mi``;
    they are renamed to the offline copy's names so that one reader serves both.

    Parameters
    ----------
    vizier_server
        Host (and port) of the VizieR server; default: astroquery's ``conf.server``, read
        now (astroquery reads it once, at import, and accepts only the known mirrors).
    """
    from astroquery.vizier import Vizier, conf

    catalogs = Vizier(columns=["**"], row_limit=-1,
                      vizier_server=vizier_server or conf.server).get_catalogs("VII/252")
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
    part = dest / f"{DR5Q_FILE}.part"  # unfinished files end in .part (see fetch_online)
    with gzip.open(part, "wt") as fh:
        out.write(fh, format="ascii.basic")
    os.replace(part, dest / DR5Q_FILE)


# --- SDSS DR16 spectra the pipeline classed QSO, with five kinds of magnitudes ------------
# Not the DR16Q catalogue (Lyke et al. 2020), whose classes were inspected by eye: every
# DR16 spectrum that the SDSS pipeline classed 'QSO' without a redshift warning.
DR16_QSO_FILE = "sdss_dr16_qso.fits"
#: SDSS photometry kinds joined to the quasars: PhotoObj column prefix -> error prefix.
DR16_MAGNITUDES = {
    "psf": ("psfMag", "psfMagErr"),
    "model": ("modelMag", "modelMagErr"),
    "petro": ("petroMag", "petroMagErr"),
    "fiber": ("fiberMag", "fiberMagErr"),
    "cmodel": ("cModelMag", "cModelMagErr"),
}
#: The selection: DR16 spectra classed QSO by the pipeline, no redshift warning, with photometry.
DR16_QSO_FROM = ("FROM SpecObj AS s JOIN PhotoObj AS p ON s.bestObjID = p.objID "
                 "WHERE s.class = 'QSO' AND s.zWarning = 0")
DR16_QSO_TITLE = ("SDSS DR16 spectra classed QSO by the pipeline (zWarning = 0; not the DR16Q catalogue) "
                  "with PSF, model, Petrosian, fibre and cModel ugriz")


def dr16q_columns() -> dict[str, str]:
    """Output column name -> SQL expression of :func:`dr16q_select`."""
    columns = {"specObjID": "s.specObjID", "zspec": "s.z", "zspec_err": "s.zErr",
               "objID": "p.objID", "ra": "p.ra", "dec": "p.dec"}
    for mag, err in DR16_MAGNITUDES.values():
        columns |= {f"{mag}_{b}": f"p.{mag}_{b}" for b in BANDS}
        columns |= {f"{err}_{b}": f"p.{err}_{b}" for b in BANDS}
    columns |= {f"extinction_{b}": f"p.extinction_{b}" for b in BANDS}
    return columns


def dr16q_select() -> str:
    """The SQL column list of the DR16 QSO fetch (after ``SELECT``, before :data:`DR16_QSO_FROM`).

    Each spectrum's id and redshift, with its PSF, model, Petrosian, fibre and cModel
    magnitudes and errors in ugriz and the Galactic extinction.
    """
    return ", ".join(expr if expr.endswith("." + name) else f"{expr} AS {name}"
                     for name, expr in dr16q_columns().items())


def fetch_dr16q(dest: Path, *, page_size: int = skyserver.SQL_PAGE_SIZE, rate: float = skyserver.RATE) -> None:
    """Fetch the DR16 spectra classed QSO with their photometry from SkyServer into ``dest``.

    The rows come in pages ordered by ``specObjID`` (SkyServer cuts an answer at 500,000
    rows without notice) and must add up to a ``COUNT(*)`` of the selection; see
    :func:`mlsky.data.skyserver.query_sql_pages`.

    Parameters
    ----------
    page_size
        Rows per SQL page.
    rate
        Requests a minute (SkyServer allows 60 per client).
    """
    table = skyserver.query_sql_pages(dr16q_select(), DR16_QSO_FROM, "s.specObjID", data_release=16,
                                      page_size=page_size, rate=skyserver.RateLimit(rate))
    if len(table) == 0:
        raise skyserver.ServiceError("the SDSS DR16 query found no spectrum classed QSO")
    missing = [c for c in dr16q_columns() if c not in table.colnames]
    if missing:
        raise skyserver.ServiceError(f"the SDSS DR16 answer lacks the column(s) {', '.join(missing)}")
    table.meta["title"] = DR16_QSO_TITLE
    part = dest / f"{DR16_QSO_FILE}.part"  # unfinished files end in .part (see fetch_online)
    table.write(part, format="fits")
    os.replace(part, dest / DR16_QSO_FILE)


def load_dr16q(n: int | None = None, *, seed: int = 0, online: bool = True) -> Table:
    """DR16 spectra classed QSO by the SDSS pipeline, with five kinds of ugriz magnitudes.

    These are the pipeline's ``class = 'QSO'`` spectra without a redshift warning, not the
    visually inspected DR16Q catalogue (Lyke et al. 2020). Columns: ``zspec``, ``psfMag_u``
    ... ``cModelMagErr_z``, ``extinction_u`` ... (see :func:`dr16q_select`). Needs the SDSS
    SkyServer once (data set ``sdss_dr16_qso``); without a network and without a cached copy
    it raises :class:`mlsky.data.DataUnavailableError`.
    """
    path = locate("sdss_dr16_qso", online=online) / DR16_QSO_FILE
    try:
        table = Table.read(path, format="fits")
    except Exception as err:
        raise DataCorruptError(f"{path} is not a readable FITS table: {err}") from err
    table.meta["source"] = str(path)
    if n is not None:
        if not 0 < n <= len(table):
            raise ValueError(f"n={n} quasars asked for; the table has {len(table)}.")
        table = table[np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))]
    return table
