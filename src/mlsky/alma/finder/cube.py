"""The dirty cube as the finder sees it: read, checked, noise-normalised, resampled.

:func:`as_cube` turns a FITS path, an HDU, a simulated cube or ``(data, header)`` into a
:class:`Cube` whose spectral axis comes first, with its per-channel noise and beam area; every
reader of the finder and the peers goes through it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from radio_beam import Beam
from scipy import ndimage

from mlsky.alma.io import CubeError, drop_degenerate_axes, read_cube, read_psf

__all__ = ["Cube", "CubeError", "as_cube", "original_pixel", "resample"]


@dataclass
class Cube:
    """A dirty cube ready for source finding.

    Attributes
    ----------
    data
        ``(n_chan, ny, nx)`` float32 in Jy/beam, NaN replaced by 0.
    noise
        Robust rms of each channel (Jy/beam); the noise of a dirty cube changes with frequency.
    blank
        ``(ny, nx)`` True where every channel was NaN (blanked edges).
    wcs
        The 3-D WCS (RA, Dec, frequency), spectral axis last in FITS order.
    pixel_scale_arcsec, channel_width_hz
        From the WCS.
    name
        Where the cube came from, for error messages.
    beam_area_pix
        Beam area in pixels (from the header's beam, else from the noise).
    beam
        The header's restoring beam, or None when the header has none.
    psf
        The dirty beam on the cube's pixels (peak 1 at ``shape // 2``), when it was given to
        :func:`as_cube`; the finder then measures sources through it and tests sidelobes.
    """

    data: np.ndarray
    noise: np.ndarray
    blank: np.ndarray
    wcs: WCS
    pixel_scale_arcsec: float
    channel_width_hz: float
    name: str = "cube"
    beam_area_pix: float = field(default=np.nan)
    beam: Beam | None = None
    psf: np.ndarray | None = None

    @property
    def snr(self) -> np.ndarray:
        """The cube in units of its per-channel noise."""
        return self.data / self.noise[:, None, None]

    @property
    def beam_fwhm_pix(self) -> float:
        """The beam's geometric-mean FWHM in pixels, from its area: ``sqrt(4 ln 2 area / pi)``."""
        return float(np.sqrt(self.beam_area_pix * 4 * np.log(2) / np.pi))

    def snr_of(self, channels: slice | np.ndarray = slice(None), ys: slice = slice(None),
               xs: slice = slice(None)) -> np.ndarray:
        """``snr[channels, ys, xs]``, dividing only that part (``channels``: a slice or indices)."""
        return self.data[channels, ys, xs] / self.noise[channels, None, None]

    def channels(self, start: int, stop: int) -> "Cube":
        """The channels ``[start, stop)`` as a cube of their own (data, noise and WCS sliced)."""
        start, stop, _ = slice(start, stop).indices(len(self.data))
        wcs = self.wcs.slice((slice(start, stop), slice(None), slice(None)), numpy_order=True)
        return replace(self, data=self.data[start:stop], noise=self.noise[start:stop], wcs=wcs)


def _data_and_header(obj: Any) -> tuple[np.ndarray, fits.Header, str]:
    if isinstance(obj, (str, os.PathLike)):
        data, header = read_cube(obj)
        return data, header, str(obj)
    name = "array"
    if isinstance(obj, fits.HDUList):
        obj = obj[0]
    if isinstance(obj, (fits.PrimaryHDU, fits.ImageHDU)):
        data, header, name = obj.data, obj.header, "HDU"
    elif hasattr(obj, "dirty") and hasattr(obj, "header"):
        data, header, name = obj.dirty, obj.header, getattr(obj, "name", "simulated cube")
    elif isinstance(obj, tuple) and len(obj) == 2:
        data, header = obj
    else:
        raise TypeError(f"cannot read a cube from {type(obj).__name__}: give a FITS path, an HDU, "
                        "a SimulatedCube or (data, header)")
    if data is None:
        raise CubeError(f"{name} holds no data")
    data, header = drop_degenerate_axes(np.asarray(data, np.float32), fits.Header(header), name)
    return data, header, name


def as_cube(obj: Any, psf: Any = None) -> Cube:
    """Read a dirty cube (FITS path, HDU, :class:`~mlsky.alma.sim.simulate.SimulatedCube` or
    ``(data, header)``) and check it.

    A degenerate Stokes axis is dropped. The spectral axis must be frequency (``FREQ``).
    ``psf``, the cube's dirty beam (a FITS path, as CASA's ``tclean`` writes ``.psf``, or a 2-D
    array on the cube's pixels with its peak at ``shape // 2``, e.g. a SimulatedCube's ``beam``),
    is checked with :func:`~mlsky.alma.io.read_psf` and kept as :attr:`Cube.psf`.

    Raises
    ------
    CubeError
        Wrong number of axes, no or unknown spectral axis, no celestial axes, all data NaN,
        or zero noise; or a dirty beam that is not a finite 2-D image. The message names the file.
    """
    beam = None if psf is None else read_psf(psf)
    data, header, name = _data_and_header(obj)
    if data.ndim != 3:
        raise CubeError(f"{name}: a cube needs 3 axes (frequency, dec, ra), got {data.ndim} with shape {data.shape}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=3)
    except Exception as err:  # astropy raises several WCS error types; all mean "unusable WCS"
        raise CubeError(f"{name}: its WCS cannot be read: {err}") from err
    spec = wcs.wcs.spec
    ctypes = list(wcs.wcs.ctype)
    if spec < 0:
        raise CubeError(f"{name}: no spectral axis among CTYPEs {ctypes}")
    if not ctypes[spec].upper().startswith("FREQ"):
        raise CubeError(f"{name}: spectral axis {ctypes[spec]!r} is not frequency (FREQ); convert it first")
    if not wcs.has_celestial:
        raise CubeError(f"{name}: no celestial (RA/Dec) axes among CTYPEs {ctypes}")
    # numpy axis order is the reverse of FITS; put the spectral axis first.
    data = np.moveaxis(data, 2 - spec, 0)
    if spec != 2:
        wcs = wcs.sub([wcs.wcs.lng + 1, wcs.wcs.lat + 1, spec + 1])
    finite = np.isfinite(data)
    if not finite.any():
        raise CubeError(f"{name}: every value is NaN or infinite")
    # Skipping NaNs costs ten times a plain median: only a blanked cube pays it.
    blanked = not finite.all()
    noise = mad_std(np.where(finite, data, np.nan) if blanked else data, axis=(1, 2), ignore_nan=blanked)
    good = np.isfinite(noise) & (noise > 0)
    if not good.any():
        raise CubeError(f"{name}: the noise is zero (the data are constant); not a dirty cube")
    noise = np.where(good, noise, np.median(noise[good])).astype(np.float32)
    blank = ~finite.any(axis=0)
    data = np.where(finite, data, 0.0).astype(np.float32)
    pixel_scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600)
    freqs = wcs.spectral.pixel_to_world_values(np.array([0.0, 1.0]))
    channel_width = float(abs(freqs[1] - freqs[0]))
    cube = Cube(data, noise, blank, wcs, pixel_scale, channel_width, name, psf=beam)
    cube.beam_area_pix = _beam_area(cube, header)
    if "BMAJ" in header and "BMIN" in header:
        cube.beam = Beam.from_fits_header(header)
    return cube


def noise_autocorrelation(cube: Cube, channels: int = 4) -> np.ndarray:
    """The spatial autocorrelation of the noise in the first ``channels`` channels, peak 1 at the centre.

    The noise of a dirty image is correlated over the beam; a cube's edge channels are taken
    as free of sources (lines sit near the band's centre).
    """
    edge = cube.snr_of(slice(0, max(1, min(channels, len(cube.data)))))
    acf = np.zeros(edge.shape[1:])
    for channel in edge:
        f = np.fft.rfft2(channel - channel.mean())
        acf += np.fft.fftshift(np.fft.irfft2(np.abs(f) ** 2, s=channel.shape))
    if not acf.max() > 0:  # no noise (a noise-free simulation): nothing is correlated
        acf[:] = 0.0
        acf[tuple(np.array(acf.shape) // 2)] = 1.0
        return acf
    return acf / acf.max()


def _beam_area(cube: Cube, header: fits.Header) -> float:
    """Beam area in pixels: from BMAJ/BMIN, else from the noise autocorrelation.

    The noise of a dirty image is correlated over the dirty beam, so the autocorrelation of a
    source-free channel has the beam's main lobe; the area above half maximum of a Gaussian
    is ``ln 2`` times its beam area.
    """
    if "BMAJ" in header and "BMIN" in header:
        pix_deg = cube.pixel_scale_arcsec / 3600
        return float(np.pi / (4 * np.log(2)) * header["BMAJ"] * header["BMIN"] / pix_deg**2)
    acf = noise_autocorrelation(cube)
    lobe, _ = ndimage.label(acf > 0.5)
    centre = lobe[acf.shape[0] // 2, acf.shape[1] // 2]
    return float(np.sum(lobe == centre) / np.log(2))


def resample(cube: Cube, pixel_scale_arcsec: float, channel_width_hz: float, tolerance: float = 0.05) -> tuple[Cube, tuple[float, float]]:
    """The cube on the given grid (linear interpolation) and the zoom factors ``(fz, fxy)``.

    Returns the cube unchanged (factors 1) when both differ by less than ``tolerance``.
    """
    fxy = cube.pixel_scale_arcsec / pixel_scale_arcsec
    fz = cube.channel_width_hz / channel_width_hz
    fxy = 1.0 if abs(fxy - 1) < tolerance else fxy
    fz = 1.0 if abs(fz - 1) < tolerance else fz
    if fxy == 1.0 and fz == 1.0:
        return cube, (1.0, 1.0)
    # Pixel edges aligned (grid_mode), as the WCS below and original_pixel() map them: the new
    # pixel j covers (j + 0.5) / f - 0.5 of the old grid.
    data = ndimage.zoom(cube.data, (fz, fxy, fxy), order=1, grid_mode=True, mode="nearest").astype(np.float32)
    blank = ndimage.zoom(cube.blank.astype(np.float32), (fxy, fxy), order=0, grid_mode=True, mode="nearest") > 0.5
    noise = np.interp(original_pixel(np.arange(data.shape[0]), fz), np.arange(len(cube.noise)), cube.noise)
    # Interpolation smooths the noise: measure it again on the new grid.
    noise = np.maximum(mad_std(data.reshape(data.shape[0], -1), axis=1), 1e-3 * noise).astype(np.float32)
    wcs = cube.wcs.deepcopy()
    wcs.wcs.cdelt = wcs.wcs.cdelt / np.array([fxy, fxy, fz])
    wcs.wcs.crpix = (wcs.wcs.crpix - 0.5) * np.array([fxy, fxy, fz]) + 0.5
    psf = None if cube.psf is None else read_psf(cube.psf, fxy)
    out = Cube(data, noise, blank, wcs, pixel_scale_arcsec, channel_width_hz, cube.name,
               cube.beam_area_pix * fxy**2, cube.beam, psf)
    return out, (fz, fxy)


def original_pixel(pixel: np.ndarray | float, factor: float) -> np.ndarray | float:
    """The coordinate on the original grid of a pixel coordinate on a grid zoomed by ``factor``
    (:func:`resample`: pixel edges aligned, so the zoomed grid's first pixel centre is at
    ``0.5 / factor - 0.5``)."""
    return (np.asarray(pixel, float) + 0.5) / factor - 0.5


# --- inputs of the three networks (shared with mlsky.alma.finder.train) -------------------------
