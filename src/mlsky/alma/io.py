"""FITS cubes and catalogues on disk: the one cube reader, its dirty beam, and atomic catalogue writes.

Both the simulator (:mod:`mlsky.alma.sim`) and the finder (:mod:`mlsky.alma.finder`) read
cubes through :func:`read_cube` and dirty beams through :func:`read_psf`, so a bad file gets
the same message whichever reads it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

__all__ = ["CubeError", "drop_degenerate_axes", "read_cube", "read_psf", "write_catalogue"]

#: Catalogue formats by file extension (astropy's names).
CATALOGUE_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits", ".csv": "ascii.csv",
                     ".vot": "votable", ".xml": "votable"}


class CubeError(ValueError):
    """A cube that cannot be read or used: file, axes, spectral axis, data or noise."""


def drop_degenerate_axes(data: np.ndarray, header: fits.Header, name: str = "cube") -> tuple[np.ndarray, fits.Header]:
    """Drop length-1 axes beyond three (Stokes first) from the data and the header's WCS.

    The axis to drop is chosen by its CTYPE, not its position: CASA writes Stokes either
    before or after frequency, and a one-channel (continuum) cube also has a length-1
    frequency axis that must stay.
    """
    if data.ndim <= 3:
        return data, header
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper() for i in range(1, data.ndim + 1)]
    fits_axes = [i for i in range(1, data.ndim + 1) if data.shape[data.ndim - i] == 1]
    fits_axes.sort(key=lambda i: (not ctypes[i - 1].startswith("STOKES"), -i))
    drop = fits_axes[: data.ndim - 3]
    if len(drop) < data.ndim - 3:
        raise CubeError(f"{name}: a cube needs 3 axes (frequency, dec, ra), got shape {data.shape}")
    wcs = WCS(header)
    keep = [i for i in range(1, data.ndim + 1) if i not in drop]
    new = wcs.sub(keep).to_header()
    for key in ("BUNIT", "BMAJ", "BMIN", "BPA", "NOISE_RMS", "OBJECT", "TELESCOP"):
        if key in header:
            new[key] = header[key]
    data = np.squeeze(data, axis=tuple(data.ndim - i for i in drop))
    return data, new


def read_cube(path: str | os.PathLike) -> tuple[np.ndarray, fits.Header]:
    """Read a FITS cube: the first HDU with data, as float32, degenerate axes dropped.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    CubeError
        If the file is not FITS, holds no data, or its data are not 3-D; the message names the
        file and the shape found.
    """
    path = Path(path)
    data, header = _first_data_hdu(path, "cube")
    data, header = drop_degenerate_axes(data, header, str(path))
    if data.ndim != 3:
        raise CubeError(f"{path}: not a data cube; expected 3 axes (freq, y, x), found shape {data.shape}")
    return data, header


def read_psf(psf: str | os.PathLike | np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """A dirty beam (FITS path or array) as a 2-D float array with peak 1: degenerate axes
    dropped, a cube's middle plane, zoomed by ``zoom`` (linear) onto a resampled cube's grid.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    CubeError
        If the file is not FITS, or the beam is not a finite 2-D image with a positive peak at
        its centre pixel (``shape // 2``); the message names the file.
    """
    name = str(psf) if isinstance(psf, (str, os.PathLike)) else "psf"
    if isinstance(psf, (str, os.PathLike)):
        psf, _ = _first_data_hdu(Path(psf), "dirty beam")
    beam = np.squeeze(np.asarray(psf, float))
    if beam.ndim == 3:
        beam = beam[len(beam) // 2]
    if beam.ndim != 2 or not np.isfinite(beam).all() or beam.max() <= 0:
        raise CubeError(f"{name}: a dirty beam must be a finite 2-D image with a positive peak, "
                        f"got shape {np.shape(psf)}")
    cy, cx = np.array(beam.shape) // 2
    if beam[cy, cx] < beam.max():
        peak = np.unravel_index(np.argmax(beam), beam.shape)
        raise CubeError(f"{name}: a dirty beam must peak at its centre pixel (shape // 2 = {(int(cy), int(cx))}, "
                        f"as CASA writes it), not at {tuple(int(v) for v in peak)}")
    if zoom != 1.0:
        # Sampled about the peak, so that it stays at the centre pixel of the zoomed beam.
        size = np.maximum(np.round(np.array(beam.shape) * zoom).astype(int), 1)
        yy, xx = np.mgrid[: size[0], : size[1]]
        beam = ndimage.map_coordinates(beam, [(yy - size[0] // 2) / zoom + cy, (xx - size[1] // 2) / zoom + cx],
                                       order=1, mode="constant")
    return beam / beam.max()


def _first_data_hdu(path: Path, what: str) -> tuple[np.ndarray, fits.Header]:
    """The first HDU with data (float32) and its header; clear errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file {path}")
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if h.data is not None), None)
            if hdu is None:
                raise CubeError(f"{path}: no HDU holds data")
            return np.asarray(hdu.data, np.float32), hdu.header.copy()
    except (OSError, TypeError) as err:
        raise CubeError(f"{path}: not a readable FITS {'file' if what == 'cube' else what} ({err})") from err


def check_catalogue_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check, before any work, that a catalogue can be written at ``path``.

    Raises
    ------
    ValueError
        Unknown extension, an existing file without ``overwrite``, or a folder that does not
        exist or cannot be written; the message names the path.
    """
    path = Path(path)
    if path.suffix.lower() not in CATALOGUE_FORMATS:
        raise ValueError(f"{path}: unknown catalogue format {path.suffix!r}; use one of "
                         f"{', '.join(sorted(CATALOGUE_FORMATS))}")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{path}: folder {folder} does not exist")
    try:  # access() says yes to root on read-only file systems such as /sys: try for real
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
    except OSError as err:
        raise ValueError(f"{path}: folder {folder} is not writable ({err.strerror})") from err
    os.close(fd)
    os.unlink(probe)
    return path


def write_catalogue(table: Table, path: str | os.PathLike) -> Path:
    """Write a catalogue (format by extension, see ``CATALOGUE_FORMATS``) atomically.

    The file gets the mode the user's umask gives any new file (a temporary file would keep
    its private 0600).
    """
    path = Path(path)
    fmt = CATALOGUE_FORMATS.get(path.suffix.lower())
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.",
                               suffix=path.suffix)
    os.close(fd)
    try:
        table.write(tmp, overwrite=True, format=fmt)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
