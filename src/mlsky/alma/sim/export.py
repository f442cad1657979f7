"""Simulated cubes as files that CARTA and DS9 open: FITS cubes with their WCS, and the truth as ECSV.

Each cube becomes ``PREFIX_dirty.fits`` (Jy/beam, with the restoring beam BMAJ/BMIN/BPA),
``PREFIX_sky.fits`` (the sky model, Jy/pixel), ``PREFIX_beam.fits`` (the dirty beam) and
``PREFIX_truth.ecsv`` (one row per source), through
:meth:`~mlsky.alma.sim.simulate.SimulatedCube.to_fits`. The cubes carry celestial
(RA---SIN/DEC--SIN) and spectral (FREQ) axes.

``mlsky alma simulate --fits`` writes every cube this way while simulating (full float32
precision); :func:`export_cube` (``mlsky alma export DIR --index K``) writes one cube of an
existing set from its shard, so with the shard's float16 precision (three significant digits).

Examples
--------
>>> from mlsky.alma.sim.export import export_cube
>>> files = export_cube("alma_set", 3)         # doctest: +SKIP
>>> [f.name for f in files]                    # doctest: +SKIP
['cube_000003_dirty.fits', 'cube_000003_sky.fits', 'cube_000003_beam.fits', 'cube_000003_truth.ecsv']
"""

from __future__ import annotations

from pathlib import Path

from mlsky.alma.sim.dataset import DatasetError, ShardReader, fits_prefix


def export_cube(folder: str | Path, index: int, prefix: str | Path | None = None, *,
                overwrite: bool = False) -> list[Path]:
    """Write cube ``index`` of a data set made by ``mlsky alma simulate`` as FITS and ECSV.

    Parameters
    ----------
    folder
        The data set's folder.
    index
        The cube's index in the set (as in the manifest and the truth's ``cube`` column).
    prefix
        Where to write (default :func:`~mlsky.alma.sim.dataset.fits_prefix`:
        ``folder/fits/cube_IIIIII``).
    overwrite
        Replace existing files.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    DatasetError
        No such cube, a bad shard (named), or a file that exists without ``overwrite``.
    """
    reader = ShardReader(folder)
    cube = reader.cube(int(index))
    prefix = Path(prefix) if prefix is not None else fits_prefix(folder, index)
    try:
        return cube.to_fits(prefix, overwrite=overwrite)
    except FileExistsError as err:
        raise DatasetError(f"{err.args[0].split(';')[0]}; pass --overwrite to replace it") from None
