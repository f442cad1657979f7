"""Interferometer antenna configurations: CASA's ``.cfg`` files.

CASA ships the layouts of ALMA and other arrays as text files (``alma/simmos/*.cfg`` in the
``casadata`` package): a few ``#`` header lines (``observatory=``, ``coordsys=``) then one
antenna a line, ``x y z diam pad``, positions in metres in the local tangent plane (x east,
y north, z up) for ``coordsys=LOC``.

Examples
--------
>>> from mlsky.alma.sim.antenna import load_antenna_config
>>> ants = load_antenna_config("alma.cycle9.3.cfg")
>>> len(ants), ants.meta["observatory"]
(43, 'ALMA')
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table


class AntennaConfigError(ValueError):
    """An antenna configuration is unknown or its file cannot be read."""


def simmos_dir() -> Path:
    """The folder of CASA's antenna configuration files inside the ``casadata`` package."""
    try:
        import casadata
    except ImportError as err:  # pragma: no cover - casadata is a dependency
        raise AntennaConfigError("the casadata package (CASA's antenna configurations) is not installed") from err
    folder = Path(casadata.datapath) / "alma" / "simmos"
    if not folder.is_dir():
        raise AntennaConfigError(f"casadata has no antenna configurations at {folder}")
    return folder


def available_configs() -> list[str]:
    """The names of the configuration files shipped by ``casadata`` (e.g. ``alma.cycle9.3.cfg``)."""
    return sorted(p.name for p in simmos_dir().glob("*.cfg"))


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    for candidate in (name, f"{name}.cfg"):
        found = simmos_dir() / candidate
        if found.is_file():
            return found
    recent = [n for n in available_configs() if n.startswith(("alma.cycle9", "alma.cycle1"))]
    raise AntennaConfigError(
        f"unknown antenna configuration {name!r}: not a file and not one of casadata's "
        f"{len(available_configs())} configurations in {simmos_dir()} "
        f"(mlsky.alma.available_configs() lists them), e.g. {', '.join(recent)}"
    )


@cache
def _read(path: str, mtime_ns: int) -> Table:
    meta: dict[str, str] = {}
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                key, sep, value = text.lstrip("#").partition("=")
                if sep:
                    meta[key.strip()] = value.strip()
                continue
            parts = text.split()
            try:
                x, y, z, diam = (float(p) for p in parts[:4])
            except ValueError:
                raise AntennaConfigError(
                    f"{path}, line {lineno}: expected 'x y z diam [pad]' (numbers in metres), got {text!r}"
                ) from None
            if len(parts) < 4 or not np.isfinite([x, y, z, diam]).all() or diam <= 0:
                raise AntennaConfigError(f"{path}, line {lineno}: bad antenna entry {text!r}")
            rows.append((x, y, z, diam, parts[4] if len(parts) > 4 else f"A{len(rows):03d}"))
    if len(rows) < 2:
        raise AntennaConfigError(f"{path}: an interferometer needs at least 2 antennas, found {len(rows)}")
    coordsys = meta.get("coordsys", "LOC").split()[0].upper()
    if coordsys != "LOC":
        raise AntennaConfigError(
            f"{path}: coordsys={coordsys!r} is not supported; mlsky reads local tangent plane (LOC) files"
        )
    x, y, z, diam, pad = zip(*rows)
    table = Table(
        [np.array(x) * u.m, np.array(y) * u.m, np.array(z) * u.m, np.array(diam) * u.m, list(pad)],
        names=["x", "y", "z", "diam", "pad"],
    )
    table.meta.update(meta)
    table.meta["observatory"] = meta.get("observatory", "unknown")
    table.meta["name"] = Path(path).name
    table.meta["path"] = str(path)
    return table


def load_antenna_config(name_or_path: str | Path) -> Table:
    """Read an antenna configuration: a casadata name (``"alma.cycle9.3.cfg"``) or a file path.

    Parameters
    ----------
    name_or_path
        A file name in casadata's ``alma/simmos`` folder (with or without ``.cfg``) or the
        path of a CASA ``.cfg`` file in local tangent plane coordinates.

    Returns
    -------
    astropy.table.Table
        Columns ``x, y, z`` (east, north, up, metres), ``diam`` (m), ``pad``; ``meta`` holds
        ``observatory``, ``name`` and ``path``.

    Raises
    ------
    AntennaConfigError
        Unknown name (the message lists the ALMA configurations available) or a malformed file
        (the message names the file and line).
    """
    path = _resolve(name_or_path)
    return _read(str(path.resolve()), path.stat().st_mtime_ns).copy()
