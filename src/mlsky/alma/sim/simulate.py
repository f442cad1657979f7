"""Simulated ALMA data cubes: sky model, dirty cube, dirty beam and truth table.

The dirty cube of each channel is the primary-beam attenuated sky convolved with that
channel's dirty beam, computed in the uv plane as ``IFFT(W * FFT(sky))`` with ``W`` the
gridded imaging weights (:mod:`mlsky.alma.sim.uv`); thermal noise is drawn per gridded uv cell
from the visibilities' radiometer noise and transformed with the same weights, so the image
noise is correlated like real interferometric noise.

What is left out, and why it matters little here: the convolution is circular, so the far
sidelobes of a source near an edge wrap to the opposite edge (the dirty beam is a few per
cent there; random skies keep sources in the inner 80%); the w-term and time and bandwidth
smearing (fields of about 25" at 230 GHz); antenna shadowing (none above 30 deg elevation
for these arrays); calibration errors and atmospheric phase noise. Against CASA's
``simobserve`` + ``tclean`` the beam FWHM agrees within 0.3%, the noise level and its
correlation length within 3%, and CASA's dirty cube minus ours without noise is noise
(:mod:`mlsky.alma.sim.casa`).

Examples
--------
>>> from mlsky.alma.sim.simulate import random_cube
>>> cube = random_cube(0, shape=(16, 64, 64))
>>> cube.dirty.shape, len(cube.truth) >= 1
((16, 64, 64), True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft
from astropy.io import fits
from astropy.table import Table

from mlsky.alma.io import read_cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA, random_sources, sky_cube, validate_sources
from mlsky.alma.sim.uv import (
    ObservationConfig,
    channel_weights,
    dirty_beam,
    primary_beam,
    visibility_noise,
)

TRUTH_COLUMNS = ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z", "flux", "peak_jy_per_pix", "snr",
                 "x0", "x1", "y0", "y1", "z0", "z1")
MAX_SIZE = 4096


@dataclass
class SimulatedCube:
    """A simulated observation: dirty cube, sky model, dirty beam and the truth.

    Attributes
    ----------
    dirty : numpy.ndarray
        ``(n_chan, ny, nx)`` float32, Jy/beam.
    sky : numpy.ndarray
        ``(n_chan, ny, nx)`` float32, Jy/pixel (the clean target).
    beam : numpy.ndarray
        ``(ny, nx)`` float32, the dirty beam at the middle channel, peak 1.
    truth : astropy.table.Table
        One row per source: ``x, y, z, fwhm_x, fwhm_y, pa_deg, fwhm_z, flux, peak_jy_per_pix,
        snr`` and the 3-D bounding box ``x0, x1, y0, y1, z0, z1`` (inclusive-exclusive).
    header : astropy.io.fits.Header
        Celestial (RA---SIN/DEC--SIN) and spectral (FREQ) WCS, BUNIT, BMAJ/BMIN/BPA.
    noise_rms : float
        Noise rms of the dirty cube (Jy/beam) at the middle channel.
    noise_rms_per_channel : numpy.ndarray
        Expected noise rms of each channel (Jy/beam).
    """

    dirty: np.ndarray
    sky: np.ndarray
    beam: np.ndarray
    truth: Table
    header: fits.Header
    noise_rms: float
    noise_rms_per_channel: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dirty.shape

    def to_fits(self, prefix: str | Path, overwrite: bool = False) -> list[Path]:
        """Write ``PREFIX_dirty.fits``, ``_sky.fits``, ``_beam.fits`` and ``_truth.ecsv``.

        Files are written to temporary names first and renamed, so a failure leaves no
        half-written cube.
        """
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        sky_header = self.header.copy()
        sky_header["BUNIT"] = "Jy/pixel"
        for key in ("BMAJ", "BMIN", "BPA"):
            sky_header.remove(key, ignore_missing=True)
        beam_header = fits.Header()
        for key in ("BMAJ", "BMIN", "BPA"):
            beam_header[key] = self.header[key]
        beam_header["BUNIT"] = ""
        outputs = {
            "dirty.fits": fits.PrimaryHDU(self.dirty, self.header),
            "sky.fits": fits.PrimaryHDU(self.sky, sky_header),
            "beam.fits": fits.PrimaryHDU(self.beam, beam_header),
        }
        written = []
        for suffix, hdu in outputs.items():
            path = Path(f"{prefix}_{suffix}")
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
            tmp = path.with_name(path.name + ".part")
            hdu.writeto(tmp, overwrite=True)
            written.append((tmp, path))
        truth_path = Path(f"{prefix}_truth.ecsv")
        tmp = truth_path.with_name(truth_path.name + ".part")
        truth = self.truth.copy()
        truth.meta["noise_rms"] = float(self.noise_rms)
        truth.meta["noise_rms_per_channel"] = [float(v) for v in self.noise_rms_per_channel]
        truth.write(tmp, format="ascii.ecsv", overwrite=True)
        written.append((tmp, truth_path))
        for tmp, path in written:
            tmp.replace(path)
        return [path for _, path in written]

    @classmethod
    def from_fits(cls, prefix: str | Path) -> SimulatedCube:
        """Read a cube written by :meth:`to_fits`.

        Raises
        ------
        ValueError
            If a FITS file is not a 3-D cube (or the beam not 2-D), or their shapes disagree.
        """
        prefix = Path(prefix)
        dirty, header = read_cube(Path(f"{prefix}_dirty.fits"))
        sky, _ = read_cube(Path(f"{prefix}_sky.fits"))
        beam = fits.getdata(Path(f"{prefix}_beam.fits")).astype(np.float32)
        if sky.shape != dirty.shape or beam.shape != dirty.shape[1:]:
            raise ValueError(
                f"{prefix}: dirty {dirty.shape}, sky {sky.shape} and beam {beam.shape} shapes disagree"
            )
        truth = Table.read(Path(f"{prefix}_truth.ecsv"), format="ascii.ecsv")
        per_channel = np.asarray(truth.meta.get("noise_rms_per_channel", []), dtype=np.float32)
        return cls(dirty, sky, beam, truth, header, float(truth.meta.get("noise_rms", np.nan)), per_channel)


def cube_header(config: ObservationConfig, shape: tuple[int, int, int], beam_fwhm: tuple[float, float, float]) -> fits.Header:
    """FITS header of a cube: RA---SIN/DEC--SIN at the phase centre, FREQ, BUNIT, restoring beam."""
    n_chan, ny, nx = shape
    cell = config.cell_arcsec / 3600
    h = fits.Header()
    h["WCSAXES"] = 3
    for i, (ctype, crval, cdelt, crpix, cunit) in enumerate(
        [
            ("RA---SIN", config.ra_deg, -cell, nx // 2 + 1, "deg"),
            ("DEC--SIN", config.dec_deg, cell, ny // 2 + 1, "deg"),
            ("FREQ", float(config.frequencies(n_chan)[0]), config.channel_width_hz, 1.0, "Hz"),
        ],
        1,
    ):
        h[f"CTYPE{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CRPIX{i}"], h[f"CUNIT{i}"] = ctype, crval, cdelt, crpix, cunit
    h["SPECSYS"] = "TOPOCENT"
    h["RESTFRQ"] = config.freq_hz
    h["RADESYS"] = "ICRS"
    h["BUNIT"] = "Jy/beam"
    bmaj, bmin, bpa = beam_fwhm
    h["BMAJ"] = (bmaj * cell, "deg, FWHM of a Gaussian fit to the dirty beam")
    h["BMIN"] = (bmin * cell, "deg")
    h["BPA"] = (bpa, "deg, east of north")
    h["TELESCOP"] = "ALMA"
    h["OBJECT"] = "mlsky simulation"
    h["ANTCFG"] = Path(config.antenna_config).name
    h["WEIGHT"] = config.weighting if config.weighting == "natural" else f"briggs {config.robust:g}"
    h["ORIGIN"] = "mlsky.alma.sim.simulate"
    return h


def fit_beam(beam: np.ndarray) -> tuple[float, float, float]:
    """FWHM major, minor (pixels) and position angle (deg, east of north) of a Gaussian fit to a beam's main lobe.

    Like CASA, the fit uses the pixels of the main lobe above 35% of the peak.

    Examples
    --------
    >>> from mlsky.alma.sim.uv import dirty_beam
    >>> bmaj, bmin, bpa = fit_beam(dirty_beam(shape=(128, 128)))
    >>> 5 < bmin <= bmaj < 15
    True
    """
    from scipy import ndimage, optimize

    beam = np.asarray(beam, dtype=float)
    peak = np.unravel_index(np.argmax(beam), beam.shape)
    labels, _ = ndimage.label(beam > 0.35 * beam[peak])
    mask = labels == labels[peak]
    y, x = np.nonzero(mask)
    values = beam[mask] / beam[peak]
    dx, dy = x - peak[1], y - peak[0]

    def model(p):
        a, b, c = p
        return np.exp(-(a * dx**2 + 2 * b * dx * dy + c * dy**2))

    # Start from the circular Gaussian whose area above 35% matches the lobe's.
    a0 = np.pi * np.log(1 / 0.35) / mask.sum()
    fit = optimize.least_squares(lambda p: model(p) - values, np.array([a0, 0.0, a0]))
    a, b, c = fit.x
    # Eigenvalues in ascending order: the first belongs to the major axis.
    eig, vec = np.linalg.eigh(np.array([[a, b], [b, c]]))
    fwhm = FWHM_PER_SIGMA / np.sqrt(2 * eig)
    major = vec[:, 0]
    # Position angle east of north: the image's x axis runs west, y north.
    pa = np.degrees(np.arctan2(-major[0], major[1])) % 180
    return float(fwhm[0]), float(fwhm[1]), float(pa)


@lru_cache(maxsize=8)
def _beam_fwhm(config: ObservationConfig, shape: tuple[int, int], freq_hz: float) -> tuple[float, float, float]:
    return fit_beam(dirty_beam(config, shape, freq_hz))


def _check_shape(shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"shape must be (n_chan, ny, nx), got {shape}")
    n_chan, ny, nx = (int(s) for s in shape)
    if not (1 <= n_chan <= MAX_SIZE and 16 <= ny <= MAX_SIZE and 16 <= nx <= MAX_SIZE):
        raise ValueError(f"shape {tuple(shape)} out of range: 1 <= n_chan <= {MAX_SIZE}, 16 <= ny, nx <= {MAX_SIZE}")
    if ny % 2 or nx % 2:
        raise ValueError(f"shape {tuple(shape)}: ny and nx must be even")
    return n_chan, ny, nx


def simulate_cube(sources: Table, *, shape=(128, 256, 256), config: ObservationConfig | None = None,
                  seed: int = 0) -> SimulatedCube:
    """Observe a sky of Gaussian sources with an interferometer: dirty cube, sky, beam, truth.

    Parameters
    ----------
    sources
        Table of sources (see :mod:`mlsky.alma.sim.sky` for the columns).
    shape
        ``(n_chan, ny, nx)`` of the cube.
    config
        The observation (default :class:`~mlsky.alma.sim.uv.ObservationConfig`, the CASA
        reference set-up).
    seed
        Seed of the thermal noise.

    Returns
    -------
    SimulatedCube

    Raises
    ------
    ValueError
        Out-of-range shape or configuration, a source outside the cube, a zero width.

    Examples
    --------
    >>> from astropy.table import Table
    >>> src = Table(dict(x=[32.0], y=[32.0], z=[8.0], fwhm_x=[5.0], fwhm_y=[3.0], pa_deg=[30.0],
    ...                  fwhm_z=[4.0], peak_jy_per_pix=[1e-3]))
    >>> cube = simulate_cube(src, shape=(16, 64, 64), seed=1)
    >>> bool(cube.truth["snr"][0] > 1)
    True
    """
    config = config or ObservationConfig()
    shape = _check_shape(shape)
    n_chan, ny, nx = shape
    freqs = config.frequencies(n_chan)
    truth = validate_sources(sources, shape)
    sky = sky_cube(truth, shape, freqs)
    weights = channel_weights(config, shape)
    observed = sky
    attenuation = np.ones(len(truth))
    if config.primary_beam:
        pb = primary_beam(config, (ny, nx), float(freqs[n_chan // 2])).astype(np.float32)
        observed = sky * pb[None]
        attenuation = pb[np.rint(np.asarray(truth["y"], float)).astype(int), np.rint(np.asarray(truth["x"], float)).astype(int)]
    # Convolution with each channel's dirty beam, in the uv plane.
    vis = scipy.fft.rfft2(observed)
    vis *= weights.w
    sigma = visibility_noise(config, freqs) if config.noise else np.zeros(n_chan)
    if config.noise:
        rng = np.random.default_rng(seed)
        # The gridded noise of a uv cell sums sigma * w_k * n_k over its visibilities: a Gaussian
        # of variance sigma² Σw_k² on each of its real and imaginary parts.
        noise = rng.standard_normal((*vis.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
        noise *= weights.noise_std
        noise *= sigma.astype(np.float32)[:, None, None]
        vis += noise
    dirty = scipy.fft.irfft2(vis, s=(ny, nx))
    dirty *= ny * nx
    rms = sigma * weights.rms_per_sigma
    beam = dirty_beam(config, (ny, nx), float(freqs[n_chan // 2]))
    bmaj, bmin, bpa = _beam_fwhm(config, (ny, nx), float(freqs[n_chan // 2]))
    header = cube_header(config, shape, (bmaj, bmin, bpa))
    noise_rms = float(rms[n_chan // 2])
    truth = _with_snr(truth, (bmaj, bmin), rms, attenuation)
    truth.meta.update(noise_rms=noise_rms, seed=int(seed), shape=list(shape),
                      config=json.dumps(config.to_dict()), beam_fwhm_pix=float(np.sqrt(bmaj * bmin)))
    return SimulatedCube(dirty, sky, beam.astype(np.float32), truth, header, noise_rms, rms.astype(np.float32))


def _with_snr(truth: Table, beam_fwhm: tuple[float, float], rms: np.ndarray,
              attenuation: np.ndarray | float = 1.0) -> Table:
    """Add ``snr``: the source's line peak in the noise-free dirty cube over the noise.

    The peak is that of the source (attenuated by the primary beam at its position) seen by
    a Gaussian beam of the dirty beam's FWHM -- an approximation that ignores blends.
    """
    table = truth.copy()
    b2 = beam_fwhm[0] * beam_fwhm[1]
    fx, fy = np.asarray(table["fwhm_x"], float), np.asarray(table["fwhm_y"], float)
    # A Gaussian of flux S seen by a Gaussian beam of peak 1 peaks at S * b² / sqrt((b²+fx²)(b²+fy²)) Jy/beam.
    peak_beam = np.asarray(table["flux"], float) * attenuation * b2 / np.sqrt((b2 + fx**2) * (b2 + fy**2))
    z = np.clip(np.rint(np.asarray(table["z"], float)).astype(int), 0, len(rms) - 1)
    # Without noise (rms 0) the SNR is infinite.
    with np.errstate(divide="ignore", invalid="ignore"):
        table["snr"] = np.where(rms[z] > 0, peak_beam / np.where(rms[z] > 0, rms[z], 1.0), np.inf)
    return table[[c for c in TRUTH_COLUMNS if c in table.colnames] +
                 [c for c in table.colnames if c not in TRUTH_COLUMNS]]


def random_cube(seed: int, *, shape=(128, 256, 256), config: ObservationConfig | None = None,
                peak_snr: tuple[float, float] | None = None) -> SimulatedCube:
    """A random sky as in Delli Veneri et al. (2023) -- a central source plus companions -- observed.

    Same seed, same cube.

    Parameters
    ----------
    seed
        Seed of the sky and of the noise.
    shape, config
        As for :func:`simulate_cube`.
    peak_snr
        ``(low, high)``: each source's line (and continuum) scaled so that its true peak SNR is
        drawn uniformly in this range, with the same sky and noise draws -- a test set of faint
        sources, which the sky's log-uniform fluxes give few of. ``None``: the fluxes as drawn.

    Examples
    --------
    >>> a, b = random_cube(3, shape=(8, 32, 32)), random_cube(3, shape=(8, 32, 32))
    >>> bool((a.dirty == b.dirty).all())
    True
    >>> faint = random_cube(3, shape=(16, 64, 64), peak_snr=(3, 6))
    >>> bool(((faint.truth["snr"] >= 3) & (faint.truth["snr"] <= 6)).all())
    True
    """
    shape = _check_shape(shape)
    if peak_snr is not None:
        low, high = (float(v) for v in peak_snr)
        if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
            raise ValueError(f"peak_snr={peak_snr!r}: give (low, high) with 0 < low <= high")
    rng = np.random.default_rng([int(seed), 6])
    sources = random_sources(rng, shape)
    noise_seed = int(rng.integers(2**63))
    if peak_snr is not None:
        # The SNR is linear in the flux, so one observation tells each source's scale factor.
        target = rng.uniform(low, high, len(sources))
        drawn = simulate_cube(sources, shape=shape, config=config, seed=noise_seed).truth["snr"]
        factor = target / np.asarray(drawn, float)
        sources["peak_jy_per_pix"] *= factor
        sources["continuum_jy"] *= factor
    return simulate_cube(sources, shape=shape, config=config, seed=noise_seed)
