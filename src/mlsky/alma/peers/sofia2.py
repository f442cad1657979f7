"""The real SoFiA-2 (Westmeier et al. 2021) as a peer: the ``sofia`` binary run on each cube.

SoFiA-2 is a GPL-3 C program, not a Python package: users install it from conda-forge
(``conda install -c conda-forge sofia-2``) or build it from source (it needs WCSLIB). This
module finds the binary through the ``MLSKY_SOFIA`` environment variable or on ``PATH``
(:func:`find_sofia`), and :class:`Sofia2Finder` runs it on a cube written to a temporary FITS
file with a parameter file, then reads its ASCII catalogue.

From SoFiA's catalogue to ours (``parameter.wcs = false``, so names have no blanks; SoFiA
then still scales line widths and sums by the header's ``CDELT3`` and divides sums by the
beam area of ``BMAJ``/``BMIN``):

- ``x, y, z``: SoFiA's flux-weighted centroid, 0-based like ours (``parameter.offset = false``);
- box: ``x_min .. x_max`` (inclusive) becomes ``x0 = x_min, x1 = x_max + 1``, likewise y and z;
- ``fwhm_x, fwhm_y``: SoFiA's ``ell_maj, ell_min`` are twice the standard deviations of the
  moment-0 map along its axes (2nd-moment ellipse fit), so the observed FWHMs are
  ``ell * 2.3548 / 2``; the beam (circular, of the cube's beam area) is then removed in
  quadrature, keeping at least 1.18 px (a 0.5 px sigma), as the Python peers do;
- ``pa_deg``: SoFiA's ``ell_pa`` is the major axis' angle from +y (towards -x), in
  ``[-90, 90)``, on the pixel grid; ours is the major axis' angle from +x towards +y, so
  ``pa_deg = (ell_pa + 90) mod 180``;
- ``fwhm_z``: SoFiA's ``w50`` (Hz) over ``CDELT3``: the line's width at 50% of its peak in
  channels, the FWHM of a Gaussian line (``w20``, the width at 20%, is 1.52 FWHMs for a
  Gaussian and noisier);
- ``flux``: ours is the integrated flux density at the line peak (Jy). SoFiA's ``f_sum`` is
  the sum of the masked voxels times ``CDELT3`` over the beam area in pixels (Jy Hz); over
  ``CDELT3`` it is the line integral in Jy x channels, which over ``1.0645 fwhm_z`` (the
  integral of a Gaussian line of unit peak) gives the peak. Like every mask-limited sum it
  misses the wings of faint sources;
- ``err_x, err_y, err_z, err_flux``: SoFiA's own statistical errors (``err_x, err_y, err_z``,
  and ``err_f_sum`` converted as ``f_sum``), which it derives from the noise rms, scaled by the
  square root of the beam area for the noise's correlation.

Examples
--------
>>> from mlsky.alma.peers import Sofia2Finder
>>> catalogue = Sofia2Finder().predict(cube)                        # doctest: +SKIP
>>> tuned = Sofia2Finder().fit(validation_cubes).predict(cube)       # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.io import fits
from astropy.stats import gaussian_fwhm_to_sigma, gaussian_sigma_to_fwhm
from astropy.table import Table

from mlsky.alma.finder import Cube, as_cube, finish_catalogue
from mlsky.alma.metrics import beam_fwhm_of, catalogue_agreement
from mlsky.alma.peers.python import SofiaFinder, _Finder

__all__ = ["SOFIA_ENV", "Sofia2Finder", "SofiaNotFoundError", "find_sofia", "read_sofia_catalogue", "sofia_agreement"]

#: Environment variable naming the ``sofia`` binary.
SOFIA_ENV = "MLSKY_SOFIA"
#: SoFiA-2's exit status when it finds no (reliable) source (``ERR_NO_SRC_FOUND``): an empty catalogue.
NO_SOURCES = 8
#: SoFiA-2's messages when too few negative detections leave the reliability unmeasurable.
TOO_FEW_NEGATIVES = ("No negative sources found", "Covariance matrix is not invertible")
#: SoFiA-2's message when the reliability step has no positive detection to judge: an empty catalogue.
NO_POSITIVES = "No positive sources found"
#: The integral of a Gaussian line of unit peak, in FWHMs: sqrt(pi / (4 ln 2)).
GAUSSIAN_INTEGRAL_PER_FWHM = float(np.sqrt(np.pi / (4 * np.log(2))))
#: Smallest deconvolved source sigma reported, in pixels (as the Python peers).
MIN_SIGMA_PIX = 0.5


class SofiaNotFoundError(FileNotFoundError):
    """The SoFiA-2 binary is neither named by ``MLSKY_SOFIA`` nor on ``PATH``."""


def find_sofia() -> Path:
    """The SoFiA-2 binary: ``$MLSKY_SOFIA``, else ``sofia`` on ``PATH``.

    Raises
    ------
    SofiaNotFoundError
        If ``MLSKY_SOFIA`` names no executable file, or it is unset and ``PATH`` has no ``sofia``.
    """
    named = os.environ.get(SOFIA_ENV)
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SofiaNotFoundError(f"{SOFIA_ENV}={named} is not an executable file")
        return path
    found = shutil.which("sofia")
    if found is None:
        raise SofiaNotFoundError(
            f"SoFiA-2 not found: set {SOFIA_ENV} to the sofia binary or put sofia on PATH "
            "(conda install -c conda-forge sofia-2)")
    return Path(found)


def read_sofia_catalogue(path: str | os.PathLike) -> Table:
    """SoFiA-2's ASCII catalogue (``output.writeCatASCII``) as a Table, named by its header row.

    Needs ``parameter.wcs = false`` (source names without blanks). A file with no source rows
    gives an empty table with the header's columns.
    """
    names: list[str] | None = None
    rows = []
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "#":
            if len(words) > 2 and words[1] == "name":
                names = words[1:]
            continue
        rows.append(words)
    if names is None:
        raise ValueError(f"{path}: no header row naming the columns; not a SoFiA-2 ASCII catalogue")
    if any(len(r) != len(names) for r in rows):
        raise ValueError(f"{path}: rows do not have the header's {len(names)} columns")
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    table = Table()
    for name, values in zip(names, columns):
        table[name] = np.asarray(values, dtype=str if name == "name" else float)
    return table


class Sofia2Finder(_Finder):
    """The real SoFiA-2: smooth-and-clip over several kernels, linker, optional reliability.

    Runs the ``sofia`` binary (see :func:`find_sofia`) at SoFiA's own defaults except for the
    parameters below; :meth:`fit` tunes them on validation cubes like the other peers.

    Parameters
    ----------
    threshold
        ``scfind.threshold``: clip level of each smoothed cube, in units of its noise.
    kernels_xy
        ``scfind.kernelsXY``: spatial Gaussian FWHMs in pixels (0 = unsmoothed).
    kernels_z
        ``scfind.kernelsZ``: spectral boxcar widths in channels (0 = unsmoothed).
    reliability
        ``reliability.enable``: keep only sources whose reliability (from the density of
        negative detections) is at least 0.9.
    threads
        ``pipeline.threads`` (SoFiA's default, 0, takes every core; 1 compares fairly with
        the single-threaded peers).
    extra
        Any other SoFiA-2 parameters, e.g. ``{"linker.minSizeZ": 3}``.

    Examples
    --------
    >>> Sofia2Finder().get_params()["threshold"]      # SoFiA-2's default
    5.0
    """

    # 24 runs of the binary per validation cube; SoFiA-2's defaults are the first of each.
    param_grid = {"threshold": (5.0, 4.5, 4.0), "kernels_xy": ((0, 3, 6), (0, 3, 6, 9)),
                  "kernels_z": ((0, 3, 7, 15), (0, 3, 7)), "reliability": (False, True)}

    def __init__(self, threshold: float = 5.0, kernels_xy: Sequence[int] = (0, 3, 6),
                 kernels_z: Sequence[int] = (0, 3, 7, 15), reliability: bool = False, threads: int = 1,
                 extra: dict[str, Any] | None = None):
        self.threshold = threshold
        self.kernels_xy = tuple(kernels_xy)
        self.kernels_z = tuple(kernels_z)
        self.reliability = reliability
        self.threads = threads
        self.extra = dict(extra or {})

    def parameters(self) -> dict[str, str]:
        """The SoFiA-2 parameters this finder sets (input and output paths aside)."""
        params = {
            "pipeline.threads": self.threads,
            "scfind.threshold": self.threshold,
            "scfind.kernelsXY": ", ".join(str(k) for k in self.kernels_xy),
            "scfind.kernelsZ": ", ".join(str(k) for k in self.kernels_z),
            "reliability.enable": self.reliability,
            # Pixel positions, names without blanks; no plots or XML.
            "parameter.wcs": False,
            "parameter.offset": False,
            "reliability.plot": False,
            "output.writeCatASCII": True,
            "output.writeCatXML": False,
            "output.overwrite": True,
            **self.extra,
        }
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}

    def _prepare(self, cube: Cube):
        # The last item caches the catalogue per parameter set across a grid search.
        return cube, {}

    def _find(self, prepared) -> Table:
        cube, cache = prepared
        params = self.parameters()
        key = tuple(sorted(params.items()))
        if key not in cache:
            cache[key] = self._run(cube, params)
        return cache[key]

    def _run(self, cube: Cube, params: dict[str, str]) -> Table:
        sofia = find_sofia()
        with tempfile.TemporaryDirectory(prefix="mlsky-sofia-") as tmp:
            folder = Path(tmp)
            fits.PrimaryHDU(_fits_data(cube), _fits_header(cube)).writeto(folder / "cube.fits")
            lines = [f"input.data = {folder / 'cube.fits'}", f"output.directory = {folder}",
                     "output.filename = cube", *(f"{k} = {v}" for k, v in params.items())]
            (folder / "sofia.par").write_text("\n".join(lines) + "\n")
            run = subprocess.run([str(sofia), str(folder / "sofia.par")], capture_output=True, text=True)
            log = run.stdout + run.stderr
            if params["reliability.enable"] == "true" and any(m in log for m in TOO_FEW_NEGATIVES):
                # Without (enough) negative detections there is no evidence of false ones:
                # every source is reliable, as with the reliability filter off.
                return self._run(cube, {**params, "reliability.enable": "false"})
            if run.returncode == NO_SOURCES or NO_POSITIVES in log:
                found = Table()
            elif run.returncode != 0:
                tail = " | ".join(log.strip().splitlines()[-3:])
                raise RuntimeError(f"{sofia} failed on {cube.name} (exit {run.returncode}): {tail}")
            else:
                found = read_sofia_catalogue(folder / "cube_cat.txt")
        return catalogue_from_sofia(found, cube)


def _fits_data(cube: Cube) -> np.ndarray:
    """The cube in Jy/beam with its blanked columns NaN again (SoFiA ignores NaN)."""
    return np.where(cube.blank[None], np.nan, cube.data).astype(np.float32)


def _fits_header(cube: Cube) -> fits.Header:
    """The cube's WCS, its unit and a circular beam of its beam area (SoFiA reads BMAJ/BMIN)."""
    header = cube.wcs.to_header()
    fwhm_deg = beam_fwhm_of(cube) * cube.pixel_scale_arcsec / 3600
    header["BUNIT"] = "Jy/beam"
    header["BMAJ"], header["BMIN"], header["BPA"] = fwhm_deg, fwhm_deg, 0.0
    return header


def catalogue_from_sofia(found: Table, cube: Cube) -> Table:
    """Our catalogue (:data:`mlsky.alma.finder.catalogue.CATALOGUE_COLUMNS`) from SoFiA-2's,
    with the conversions of the module's notes."""
    beam_sigma = beam_fwhm_of(cube) * gaussian_fwhm_to_sigma
    channel = abs(float(_fits_header(cube)["CDELT3"]))
    rows = []
    for src in found:
        sigmas = np.array([src["ell_maj"], src["ell_min"]]) / 2.0
        fwhm = gaussian_sigma_to_fwhm * np.sqrt(np.maximum(sigmas**2 - beam_sigma**2, MIN_SIGMA_PIX**2))
        fwhm_z = max(float(src["w50"]) / channel, 1.0)
        to_flux = 1.0 / channel / (GAUSSIAN_INTEGRAL_PER_FWHM * fwhm_z)
        rows.append(dict(
            x=float(src["x"]), y=float(src["y"]), z=float(src["z"]), fwhm_x=float(fwhm[0]), fwhm_y=float(fwhm[1]),
            pa_deg=float(src["ell_pa"]) + 90.0, fwhm_z=fwhm_z, flux=float(src["f_sum"]) * to_flux,
            # SoFiA-2's own statistical errors, where its catalogue has them.
            **{ours: float(src[theirs]) * scale for ours, theirs, scale in
               (("err_x", "err_x", 1.0), ("err_y", "err_y", 1.0), ("err_z", "err_z", 1.0), ("err_flux", "err_f_sum", to_flux))
               if theirs in src.colnames},
        ))
    table = finish_catalogue(rows, cube)
    # SoFiA reports the extent of its mask, not a box from fitted shapes.
    for i, src in enumerate(found):
        for axis in "xyz":
            table[f"{axis}0"][i] = int(src[f"{axis}_min"])
            table[f"{axis}1"][i] = int(src[f"{axis}_max"]) + 1
    return table


def sofia_agreement(cubes: Sequence, python: _Finder | None = None, real: Sofia2Finder | None = None,
                    tolerance_beams: float = 0.6) -> dict[str, float]:
    """How close the Python SoFiA-like finder comes to the real SoFiA-2 on the same cubes.

    Both run on every cube (defaults: :class:`~mlsky.alma.peers.python.SofiaFinder` and
    :class:`Sofia2Finder`, each at its defaults); the real one's detections play the truth
    in :func:`mlsky.alma.metrics.catalogue_agreement` (strict match, beam from each cube).

    Returns
    -------
    dict
        ``n_reference`` (SoFiA-2's detections), ``n_other`` (the Python finder's),
        ``n_common``, ``reference_found``, ``other_confirmed`` and ``jaccard``.
    """
    python = python or SofiaFinder()
    real = real or Sofia2Finder()
    read = [c if isinstance(c, Cube) else as_cube(c) for c in cubes]
    return catalogue_agreement([real.predict(c) for c in read], [python.predict(c) for c in read],
                               beam_fwhm_pix=[beam_fwhm_of(c) for c in read], tolerance_beams=tolerance_beams)
