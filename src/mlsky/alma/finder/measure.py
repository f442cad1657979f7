"""Measuring a detected source on the data: position, size, angle, line and flux.

Given a detection (a position and a channel range from the networks), the source is measured
on the cube itself, as a classical finder does, so the numbers do not depend on how well a
regressor generalises:

1. **Image.** The channels of the line are summed; a 2-D Gaussian is fitted to a window of two
   beams around the detection (:mod:`astropy.modeling`). Its centre is the position; its
   ellipse, deconvolved from the beam with :mod:`radio_beam`, the source's FWHMs and angle.
   Given the cube's dirty beam (``psf``), the image is fitted instead with the source's own
   Gaussian convolved with that beam (in Fourier space, so the fitted sizes and angle are the
   source's, with no deconvolution step): the dirty beam's negative sidelobes narrow what a
   Gaussian fit sees, so deconvolving by the restoring beam underestimates sizes (by 0.2-1.8 px
   for the minor axis on noise-free simulated sources of 2-8 px), and an axis barely wider than
   the beam has no deconvolved size at all. The flux is then the fitted source's own.
2. **Spectrum.** In every channel the amplitude of that fitted (convolved) profile is solved by
   linear least squares -- the optimal extraction of a known profile in white noise -- which
   gives the flux-density spectrum; its continuum (the median of the channels beyond the line) is
   taken out, and a Gaussian line fitted to it gives the line centre, its FWHM and the flux
   density at the line peak.
   Steps 1 and 2 then run once more with the channels weighted by that fitted line instead of
   summed over the detector's range: the best weighting of a known line in independent channel
   noise. On lone simulated sources of SNR > 5 this brings the size residuals to those of a fit
   told the true position and line (``benchmarks/alma_sizes.py``).
3. **Primary beam.** The flux is divided by the ALMA 12 m primary beam at the source's distance
   from the pointing centre (the cube's reference pixel): dirty cubes are not primary-beam
   corrected.

**Errors.** Each parameter comes with its 1-sigma error. The noise of a dirty image is
correlated over the beam, so the least-squares covariance ``(J'J)^-1`` of white noise would
understate it several times; the errors are the sandwich ``(J'J)^-1 J'CJ (J'J)^-1``, with ``C``
the noise's correlation as the cube's own noise autocorrelation measures it. Sizes are carried
as their squares, so that an unresolved axis (fitted as 0) gets the error of what the data allow
above 0; an angle the data leave free (a round source) gets a uniform angle's spread,
:data:`UNCONSTRAINED_ANGLE_ERROR`. The line's errors are those of its fit for independent
channels, and the flux's adds what the size's uncertainty does to the source's total. On lone
simulated sources of SNR > 5 fitted through the dirty beam, the pulls (measured - true) / error
scatter by about 1 (``tests/test_alma_measure.py``); through the restoring beam the sizes' and
flux's bias is not in them.

The beam comes from the header (``BMAJ``, ``BMIN``, ``BPA``). Without one, it is the noise
autocorrelation's, scaled to the beam area of :func:`~mlsky.alma.finder.cube.as_cube` (also from
the noise); the noise sees the squared imaging weights, so for Briggs weighting this beam is
narrower than the dirty beam (about 17% for robust 0.5) and fluxes come out low by about that
squared: give cubes their beam.
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
from astropy import units as u
from astropy.modeling import fitting, models
from astropy.utils.exceptions import AstropyUserWarning
from radio_beam import Beam
from radio_beam.utils import BeamError
from scipy import optimize, signal

from mlsky.alma.finder.cube import Cube, noise_autocorrelation
from mlsky.alma.sim.sky import FWHM_PER_SIGMA

__all__ = ["cube_beam", "measure_source", "pb_gain"]

#: The ALMA 12 m antennas' primary beam FWHM is 1.13 lambda / D (ALMA Technical Handbook).
ALMA_PB_FWHM_LAMBDA_OVER_D = 1.13
ALMA_DIAMETER_M = 12.0
#: The error given an angle (mod 180 deg) that the data leave free: a uniform angle's std.
UNCONSTRAINED_ANGLE_ERROR = 180.0 / np.sqrt(12)
#: The fewest line-free channels whose median is taken as the continuum (:func:`_fit_line`).
MIN_LINE_FREE = 8


def _sky_pa(pa_pix_deg: float) -> float:
    """Angle from +x towards +y (the image's x axis runs west, y north) -> east of north."""
    return (pa_pix_deg + 90.0) % 180.0


def _pixel_pa(pa_sky_deg: float) -> float:
    return (pa_sky_deg - 90.0) % 180.0


def cube_beam(cube: Cube) -> Beam:
    """The restoring (synthesised) beam of a cube, in arcsec, position angle east of north."""
    if cube.beam is not None:
        return cube.beam
    from mlsky.alma.sim.simulate import fit_beam

    # The noise of a dirty image is correlated over the beam: its autocorrelation has the
    # beam's orientation and axis ratio, but is narrower (the noise sees the squared weights).
    major, minor, pa = fit_beam(noise_autocorrelation(cube))
    scale = np.sqrt(cube.beam_area_pix / (np.pi / (4 * np.log(2)) * major * minor))
    pix = cube.pixel_scale_arcsec
    return Beam(major=major * scale * pix * u.arcsec, minor=minor * scale * pix * u.arcsec, pa=pa * u.deg)


def pb_gain(cube: Cube, x: float, y: float) -> float:
    """The ALMA 12 m primary beam's gain at pixel ``(x, y)``, pointing at the reference pixel.

    A Gaussian of FWHM ``1.13 lambda / D`` at the cube's middle frequency.
    """
    cx, cy = cube.wcs.wcs.crpix[0] - 1, cube.wcs.wcs.crpix[1] - 1
    freq = float(cube.wcs.spectral.pixel_to_world_values(cube.data.shape[0] / 2))
    fwhm_arcsec = np.degrees(ALMA_PB_FWHM_LAMBDA_OVER_D * 2.99792458e8 / freq / ALMA_DIAMETER_M) * 3600
    r = np.hypot(x - cx, y - cy) * cube.pixel_scale_arcsec
    return float(np.exp(-4 * np.log(2) * (r / fwhm_arcsec) ** 2))


def _deconvolve(major: float, minor: float, pa_pix: float, beam: Beam, pix: float) -> tuple[float, float, float]:
    """Source FWHMs (pix) and angle (pix frame) of a measured ellipse, deconvolved from the beam.

    Where the measured ellipse is narrower than the beam along some direction, the exact
    deconvolution has no solution (radio_beam raises); each measured axis is then deconvolved
    on its own, by the beam's extent along it, so that a source resolved along its major axis
    keeps that size and angle instead of becoming a point. An unresolved axis gets a FWHM of 0.
    """
    measured = Beam(major=max(major, minor) * pix * u.arcsec, minor=min(major, minor) * pix * u.arcsec,
                    pa=_sky_pa(pa_pix if major >= minor else pa_pix + 90) * u.deg)
    try:
        source = measured.deconvolve(beam, failure_returns_pointlike=False)
    except (BeamError, ValueError):  # "beam larger than the source along a direction"
        return _deconvolve_axes(max(major, minor), min(major, minor), pa_pix if major >= minor else pa_pix + 90, beam, pix)
    return (float(source.major.to_value(u.arcsec)) / pix, float(source.minor.to_value(u.arcsec)) / pix,
            _pixel_pa(float(source.pa.to_value(u.deg))))


def _deconvolve_axes(major: float, minor: float, pa_pix: float, beam: Beam, pix: float) -> tuple[float, float, float]:
    """Deconvolve each axis of a measured ellipse (FWHMs in pix) by the beam's FWHM along it."""
    bmaj, bmin = (float(v.to_value(u.arcsec)) / pix for v in (beam.major, beam.minor))
    angle = np.radians(_pixel_pa(float(beam.pa.to_value(u.deg))))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    beam_cov = rot @ np.diag([bmaj**2, bmin**2]) @ rot.T  # in FWHM^2: Gaussian widths add in quadrature
    t = np.radians(pa_pix)
    along = [np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])]
    s1, s2 = (float(np.sqrt(max(m**2 - a @ beam_cov @ a, 0.0))) for m, a in zip((major, minor), along))
    if s2 > s1:
        return s2, s1, (pa_pix + 90.0) % 180.0
    return s1, s2, pa_pix % 180.0


def measure_source(cube: Cube, x: float, y: float, z0: int, z1: int, *, pbcor: bool = True,
                   psf: np.ndarray | None = None, noise_acf: np.ndarray | None = None) -> dict[str, float]:
    """Measure one source of ``cube`` detected near ``(x, y)`` in channels ``[z0, z1)``.

    Parameters
    ----------
    cube
        The cube, as :func:`~mlsky.alma.finder.cube.as_cube` reads it.
    x, y
        Where the detector put the source (pixels); the fit may move it by up to a beam.
    z0, z1
        The channels of the line (half-open).
    pbcor
        Divide the flux by the primary beam's gain (dirty cubes are not corrected).
    psf
        The cube's dirty beam on its pixels, peak 1 at ``shape // 2``
        (:func:`~mlsky.alma.io.read_psf`): the source is then fitted through it.
    noise_acf
        :func:`~mlsky.alma.finder.cube.noise_autocorrelation` of the cube, for the errors; a
        caller that measures many sources of one cube passes it once computed.

    Returns
    -------
    dict
        ``x, y`` (pix), ``fwhm_x, fwhm_y`` (pix, deconvolved; ``fwhm_x >= fwhm_y``), ``pa_deg``
        (of the ``fwhm_x`` axis from +x towards +y), ``z, fwhm_z`` (channels) and ``flux`` (Jy,
        spatially integrated, at the line peak); and the 1-sigma error of each, ``err_<name>``
        (see the module).

    Examples
    --------
    >>> from mlsky.alma.sim.simulate import random_cube
    >>> from mlsky.alma.finder import as_cube
    >>> sim = random_cube(2, shape=(32, 64, 64), peak_snr=(20, 30))
    >>> src = sim.truth[0]
    >>> m = measure_source(as_cube(sim), src["x"] + 1, src["y"] - 1, int(src["z0"]), int(src["z1"]))
    >>> bool(abs(m["x"] - src["x"]) < 1 and abs(m["y"] - src["y"]) < 1)
    True
    """
    n_chan, ny, nx = cube.data.shape
    beam = cube_beam(cube)
    pix = cube.pixel_scale_arcsec
    bmaj_pix = float(beam.major.to_value(u.arcsec)) / pix
    z0, z1 = int(max(z0, 0)), int(min(max(z1, z0 + 1), n_chan))
    half = int(np.ceil(1.5 * bmaj_pix))
    xi, yi = int(round(x)), int(round(y))
    ys, xs = slice(max(yi - half, 0), min(yi + half + 1, ny)), slice(max(xi - half, 0), min(xi + half + 1, nx))
    window = dict(bmaj_pix=bmaj_pix, ys=ys, xs=xs)
    acf = _acf_kernel(noise_autocorrelation(cube) if noise_acf is None else noise_acf, ys.stop - ys.start,
                      xs.stop - xs.start)
    if psf is None:
        fit_image = partial(_fit_gaussian, beam_area_pix=cube.beam_area_pix, **window)
    else:
        fit_image = partial(_fit_through_beam, beam_ft=_beam_transform(psf, ys, xs), **window)
    # First pass: the channels of the detection, each in units of its noise, summed.
    weights = np.zeros(n_chan)
    weights[z0:z1] = 1.0
    shape, line = _fit_image_and_line(cube, fit_image, None, x, y, ys, xs, weights, z0, z1)
    # Second pass: the channels weighted by the fitted line itself, the best weighting of a known
    # profile in independent noise; the boxcar of the detector's range adds noise channels. (A
    # line not fitted keeps the boxcar.) Only this pass's errors are kept, so only it takes them.
    if line["fwhm_z"] > 0 and line["peak"] > 0:
        sigma_z = line["fwhm_z"] / FWHM_PER_SIGMA
        weights = np.exp(-0.5 * ((np.arange(n_chan) - line["z"]) / sigma_z) ** 2)
        weights[weights < 1e-3] = 0.0
        x, y = shape["x"], shape["y"]
    shape, line = _fit_image_and_line(cube, fit_image, acf, x, y, ys, xs, weights, z0, z1)
    measured = np.array([shape[k] for k in ("fwhm_x", "fwhm_y", "pa_deg")])
    cov = shape["cov"]  # of x, y, the measured fwhm_x^2 and fwhm_y^2, pa_deg
    var_squared = np.diag(cov)[2:4]
    if psf is None:
        fwhm_x, fwhm_y, pa = _deconvolve(*measured, beam, pix)
        # The deconvolution takes (about) the beam's square from each axis's: the variance of a
        # squared size is the measured axis's; the angle's is carried through numerically.
        if measured[1] > measured[0]:
            var_squared = var_squared[::-1]
        to_fwhm = np.diag([0.5 / measured[0], 0.5 / measured[1], 1.0])
        grad = _numerical_jacobian(lambda m: np.array(_deconvolve(*m, beam, pix)), measured)[2]
        var_pa = float(grad @ to_fwhm @ cov[2:, 2:] @ to_fwhm @ grad)
    else:
        fwhm_x, fwhm_y, pa = measured
        if fwhm_y > fwhm_x:
            fwhm_x, fwhm_y, pa = fwhm_y, fwhm_x, (pa + 90.0) % 180.0
            var_squared = var_squared[::-1]
        var_pa = float(cov[4, 4])
    # An angle mod 180 that the data do not pin down is spread as a uniform one.
    err_pa = UNCONSTRAINED_ANGLE_ERROR if shape["free_angle"] else min(np.sqrt(max(var_pa, 0.0)), UNCONSTRAINED_ANGLE_ERROR)
    gain = pb_gain(cube, shape["x"], shape["y"]) if pbcor else 1.0
    flux = line["peak"] / gain
    # The flux's error: the line's peak given the fitted profile, and what the profile's own
    # uncertainty (the size's, chiefly) adds to the source's total.
    err_flux = np.sqrt(line["err_peak"] ** 2 + line["peak"] ** 2 * shape["total_rel_var"]) / gain
    return {"x": shape["x"], "y": shape["y"], "fwhm_x": float(fwhm_x), "fwhm_y": float(fwhm_y),
            "pa_deg": float(pa), "z": line["z"], "fwhm_z": line["fwhm_z"], "flux": flux,
            "err_x": float(np.sqrt(cov[0, 0])), "err_y": float(np.sqrt(cov[1, 1])),
            "err_fwhm_x": _size_error(fwhm_x, var_squared[0]), "err_fwhm_y": _size_error(fwhm_y, var_squared[1]),
            "err_pa_deg": float(err_pa), "err_z": line["err_z"], "err_fwhm_z": line["err_fwhm_z"],
            "err_flux": float(err_flux)}


def _fit_image_and_line(cube: Cube, fit_image, acf: np.ndarray | None, x: float, y: float, ys: slice, xs: slice,
                        weights: np.ndarray, z0: int, z1: int) -> tuple[dict[str, float], dict[str, float]]:
    """The image's shape fitted on the channels combined with ``weights`` (in noise units, so the
    image's noise is 1, correlated as ``acf``), and the line fitted to the optimal-extraction
    spectrum of that profile.

    ``fit_image(image, x, y, acf)`` returns the fitted shape (``x, y`` in the cube's pixels,
    ``fwhm_x, fwhm_y, pa_deg``; with ``acf``, also their covariance ``cov``, ``free_angle`` and
    ``total_rel_var``) and the image of a source of 1 Jy of that shape on the window, in
    Jy/beam. Without ``acf`` no errors are taken.
    """
    used = np.flatnonzero(weights)
    image = np.tensordot(weights[used], cube.snr_of(used, ys, xs), axes=1) / np.sqrt(np.sum(weights[used] ** 2))
    shape, p = fit_image(image, x, y, acf)
    # Optimal extraction of the fitted profile, channel by channel: Jy at each channel, with a
    # noise of the channel's times sqrt(p' C p) / p'p for pixel noise correlated as C.
    pp = float((p * p).sum())
    spectrum = np.tensordot(cube.data[:, ys, xs], p, axes=([1, 2], [0, 1])) / pp
    spectrum_noise = None if acf is None else cube.noise * np.sqrt(float((p * _correlated(p[None], acf)[0]).sum())) / pp
    return shape, _fit_line(spectrum, spectrum_noise, z0, z1)


def _about_peak(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` (a beam or autocorrelation, peak at its ``shape // 2``) on a grid of ``shape``,
    its peak at the grid's ``shape // 2``: cropped where it is larger, zero where it is smaller."""
    grid = np.zeros(shape)
    (cy, cx), (ty, tx) = np.array(array.shape) // 2, np.array(shape) // 2
    y0, x0 = max(cy - ty, 0), max(cx - tx, 0)
    sub = array[y0 : cy + shape[0] - ty, x0 : cx + shape[1] - tx]
    oy, ox = ty - (cy - y0), tx - (cx - x0)
    grid[oy : oy + sub.shape[0], ox : ox + sub.shape[1]] = sub
    return grid


def _acf_kernel(acf: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """The noise autocorrelation on ``(2 ny - 1, 2 nx - 1)`` pixels about its peak: it reaches
    from any pixel of an ``(ny, nx)`` window to any other."""
    return _about_peak(acf, (2 * ny - 1, 2 * nx - 1))


def _correlated(images: np.ndarray, acf: np.ndarray) -> np.ndarray:
    """``C @ image`` for each image of the window, C the pixel noise's correlation matrix."""
    return signal.fftconvolve(images, acf[None], mode="same", axes=(1, 2))


def _covariance(jac: np.ndarray, window: tuple[int, int], acf: np.ndarray) -> np.ndarray:
    """The covariance of least-squares parameters fitted to an image of unit noise correlated as
    ``acf``: the sandwich ``(J'J)^-1 J'CJ (J'J)^-1``. (The correlated noise leaves the least-squares
    fit unbiased, but its parameters scatter by more than ``(J'J)^-1``, about a beam area's worth.)"""
    columns = jac.T.reshape(-1, *window)
    return _sandwich(jac, _correlated(columns, acf).reshape(len(columns), -1).T)


def _sandwich(jac: np.ndarray, noise_jac: np.ndarray) -> np.ndarray:
    """``(J'J)^-1 J' (C J) (J'J)^-1``, the least-squares covariance for noise of covariance ``C``,
    given ``C J`` (``noise_jac``)."""
    bread = np.linalg.pinv(jac.T @ jac)
    return bread @ (jac.T @ noise_jac) @ bread


def _image_errors(jac: np.ndarray, model: np.ndarray, acf: np.ndarray, total_grad: np.ndarray) -> dict[str, object]:
    """The covariance ``cov`` of the fitted ``x, y, fwhm_x^2, fwhm_y^2, pa_deg`` from the
    Jacobian of the fit's parameters (total or amplitude, x, y, sigma_x^2, sigma_y^2, angle in
    rad), and ``total_rel_var``, the relative variance that the shape's uncertainty adds to the
    source's total (``total_grad``: d total / d parameters, over the total).

    Squared sizes, because a size's error must stay finite where the size is 0. What the shape
    adds to the total is the total's variance less that of a fit of the model's scale alone (the
    shape known), which the spectrum's noise already holds.
    """
    cov = _covariance(jac, model.shape, acf)
    known = _covariance(model.reshape(-1, 1), model.shape, acf)[0, 0]
    to_shape = np.zeros((5, 6))
    to_shape[[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]] = [1, 1, FWHM_PER_SIGMA**2, FWHM_PER_SIGMA**2, np.degrees(1)]
    # A round source leaves its angle free (the angle's column is 0, and the pseudo-inverse would
    # give it no variance at all).
    free_angle = np.linalg.norm(jac[:, 5]) <= 1e-9 * np.linalg.norm(jac[:, 1])
    return {"cov": to_shape @ cov @ to_shape.T, "free_angle": bool(free_angle),
            "total_rel_var": max(float(total_grad @ cov @ total_grad) - known, 0.0)}


def _size_error(fwhm: float, var_squared: float) -> float:
    """The error of a FWHM from the variance of its square: ``std(fwhm^2) / (2 fwhm)`` for a
    resolved size, and ``sqrt(std(fwhm^2))`` (what the data allow above 0) for an unresolved one."""
    return float(np.sqrt(fwhm**2 + np.sqrt(max(var_squared, 0.0))) - fwhm)


def _numerical_jacobian(f, m: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central differences of ``f(fwhm_1, fwhm_2, pa_deg)`` at ``m``, its angle (the last output,
    in deg mod 180) differenced across its wrap."""
    columns = []
    for i in range(len(m)):
        dm = np.zeros(len(m))
        dm[i] = step
        diff = f(m + dm) - f(m - dm)
        diff[-1] = (diff[-1] + 90.0) % 180.0 - 90.0
        columns.append(diff / (2 * step))
    return np.stack(columns, axis=1)


def _fit_gaussian(image: np.ndarray, x: float, y: float, acf: np.ndarray | None, *, bmaj_pix: float, ys: slice, xs: slice,
                  beam_area_pix: float) -> tuple[dict[str, object], np.ndarray]:
    """A 2-D Gaussian fitted to the image: the source convolved with the beam, to be deconvolved."""
    yy, xx = np.mgrid[ys, xs]
    sigma_beam = bmaj_pix / FWHM_PER_SIGMA
    start = models.Gaussian2D(amplitude=max(_peak_near(image, x, y, ys, xs), 1.0), x_mean=x, y_mean=y,
                              x_stddev=sigma_beam, y_stddev=sigma_beam, theta=0.0,
                              bounds={"x_mean": (x - bmaj_pix, x + bmaj_pix), "y_mean": (y - bmaj_pix, y + bmaj_pix),
                                      "x_stddev": (0.3 * sigma_beam, 6 * sigma_beam),
                                      "y_stddev": (0.3 * sigma_beam, 6 * sigma_beam), "amplitude": (0, None)})
    with warnings.catch_warnings():
        # A faint source may not converge: its fit is still the best estimate there is.
        warnings.simplefilter("ignore", AstropyUserWarning)
        fit = fitting.TRFLSQFitter()(start, xx, yy, image)
    shape = {"x": float(fit.x_mean.value), "y": float(fit.y_mean.value),
             "fwhm_x": float(fit.x_stddev.value) * FWHM_PER_SIGMA, "fwhm_y": float(fit.y_stddev.value) * FWHM_PER_SIGMA,
             "pa_deg": np.degrees(float(fit.theta.value)) % 180.0}
    if acf is not None:
        amplitude, _, _, sx, sy, _ = fit.parameters
        jac = np.stack([d.ravel() for d in fit.fit_deriv(xx, yy, *fit.parameters)], axis=1)
        jac[:, 3:5] /= 2 * np.array([sx, sy])  # d / d sigma^2, as _image_errors takes them
        # The total is 2 pi amplitude sx sy.
        shape |= _image_errors(jac, fit(xx, yy), acf, np.array([1 / amplitude, 0, 0, 0.5 / sx**2, 0.5 / sy**2, 0]))
    # The fitted Gaussian at peak 1 Jy/beam holds sum / beam_area Jy.
    profile = fit.copy()
    profile.amplitude = 1.0
    p = profile(xx, yy)
    return shape, p * (beam_area_pix / float(p.sum()))


def _peak_near(image: np.ndarray, x: float, y: float, ys: slice, xs: slice) -> float:
    yi = min(max(int(round(y)) - ys.start, 0), image.shape[0] - 1)
    xi = min(max(int(round(x)) - xs.start, 0), image.shape[1] - 1)
    return float(image[yi, xi])


def _beam_transform(psf: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
    """The real FFT of the dirty beam on a square grid of twice the window (so that the beam's
    reach from any source in the window wraps around outside it), its peak at the origin."""
    size = 2 ** int(np.ceil(np.log2(2 * max(ys.stop - ys.start, xs.stop - xs.start))))
    return np.fft.rfft2(np.fft.ifftshift(_about_peak(psf, (size, size))))


def _fit_through_beam(image: np.ndarray, x: float, y: float, acf: np.ndarray | None, *, bmaj_pix: float, ys: slice,
                      xs: slice, beam_ft: np.ndarray) -> tuple[dict[str, object], np.ndarray]:
    """The source's own Gaussian, convolved with the dirty beam, fitted to the image.

    The convolution is a product in Fourier space, where a Gaussian of any size (even far below
    a pixel) and any sub-pixel centre is exact, so sizes down to 0 are modelled without bias.
    """
    size = beam_ft.shape[0]
    ky, kx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    ny, nx = image.shape

    def transform(p: np.ndarray) -> np.ndarray:
        """The Fourier transform of a source of total 1 at ``p[1:3]`` (window pixels), sigmas
        ``p[3:5]`` along its axes, the first at angle ``p[5]``, seen through the beam."""
        c, s = np.cos(p[5]), np.sin(p[5])
        a, b, d = (c * p[3]) ** 2 + (s * p[4]) ** 2, c * s * (p[3] ** 2 - p[4] ** 2), (s * p[3]) ** 2 + (c * p[4]) ** 2
        return np.exp(-2 * np.pi**2 * (a * kx**2 + 2 * b * kx * ky + d * ky**2) - 2j * np.pi * (kx * p[1] + ky * p[2])) * beam_ft

    def model(p: np.ndarray) -> np.ndarray:
        """The source of total ``p[0]`` on the window."""
        return p[0] * np.fft.irfft2(transform(p), s=(size, size))[:ny, :nx]

    def jacobian(p: np.ndarray, squared: bool = False) -> np.ndarray:
        """d model / d p in closed form: each derivative is the transform times that of its exponent.
        With ``squared``, the sizes' columns are d / d sigma^2, which stay finite at a size of 0."""
        f = transform(p)
        c, s = np.cos(p[5]), np.sin(p[5])
        along, across = c * kx + s * ky, -s * kx + c * ky
        d_size = (-2 * np.pi**2 * along**2, -2 * np.pi**2 * across**2) if squared else \
            (-4 * np.pi**2 * p[3] * along**2, -4 * np.pi**2 * p[4] * across**2)
        exponent = (np.ones_like(f.real) / p[0], -2j * np.pi * kx, -2j * np.pi * ky, *d_size,
                    -4 * np.pi**2 * (p[3] ** 2 - p[4] ** 2) * along * across)
        columns = np.fft.irfft2(np.stack([f * e for e in exponent]), s=(size, size))[:, :ny, :nx]
        return p[0] * columns.reshape(len(exponent), -1).T

    sigma_beam = bmaj_pix / FWHM_PER_SIGMA
    x0, y0 = x - xs.start, y - ys.start
    # Start from a source of half the beam's size whose dirty peak is the image's.
    start = np.array([1.0, x0, y0, 0.5 * sigma_beam, 0.5 * sigma_beam, 0.0])
    start[0] = max(_peak_near(image, x, y, ys, xs), 1.0) / max(float(model(start).max()), 1e-12)
    lower = [0.0, x0 - bmaj_pix, y0 - bmaj_pix, 0.0, 0.0, -np.inf]
    upper = [np.inf, x0 + bmaj_pix, y0 + bmaj_pix, 6 * sigma_beam, 6 * sigma_beam, np.inf]
    fit = optimize.least_squares(lambda p: (model(p) - image).ravel(), start, jac=jacobian, bounds=(lower, upper)).x
    shape = {"x": float(fit[1]) + xs.start, "y": float(fit[2]) + ys.start, "fwhm_x": float(fit[3]) * FWHM_PER_SIGMA,
             "fwhm_y": float(fit[4]) * FWHM_PER_SIGMA, "pa_deg": np.degrees(float(fit[5])) % 180.0}
    if acf is not None:
        shape |= _image_errors(jacobian(fit, squared=True), model(fit), acf,
                               np.array([1 / max(fit[0], 1e-30), 0, 0, 0, 0, 0]))
    # The dirty beam has peak 1: a source of 1 Jy is this model with total 1, in Jy/beam.
    return shape, model(np.array([1.0, *fit[1:]]))


def _fit_line(spectrum: np.ndarray, noise: np.ndarray | None, z0: int, z1: int) -> dict[str, float]:
    """A Gaussian line fitted to a flux spectrum around channels ``[z0, z1)``, with (given the
    independent channel noise ``noise``) the errors of its centre, FWHM and peak.

    The continuum is taken out first: the median of the channels beyond the fit's window (a
    line's range on either side of it), as ``imcontsub`` does at order 0; a continuum left in
    widens the fitted line (by 0.3-0.6 channels for the continuum sources of simulated cubes).
    With fewer than :data:`MIN_LINE_FREE` such channels, none is taken out.
    """
    n = len(spectrum)
    width = max(z1 - z0, 2)
    lo, hi = max(z0 - width, 0), min(z1 + width, n)
    line_free = np.r_[spectrum[:lo], spectrum[hi:]].astype(float)
    continuum, continuum_var = 0.0, 0.0
    if line_free.size >= MIN_LINE_FREE:
        continuum = float(np.median(line_free))
        if noise is not None:  # a median's variance is pi / 2 that of the mean
            continuum_var = np.pi / 2 * float(np.mean(np.r_[noise[:lo], noise[hi:]] ** 2)) / line_free.size
    z = np.arange(lo, hi, dtype=float)
    s = spectrum[lo:hi].astype(float) - continuum
    inside = s[z0 - lo : z1 - lo]
    centre = float(np.sum(np.arange(z0, z1) * np.clip(inside, 0, None)) / max(np.clip(inside, 0, None).sum(), 1e-30)) \
        if inside.size and inside.max() > 0 else (z0 + z1 - 1) / 2
    sigma0 = max((z1 - z0) / 6.0, 0.5)
    start = models.Gaussian1D(amplitude=max(float(inside.max()) if inside.size else 0.0, 1e-12), mean=centre,
                              stddev=sigma0, bounds={"mean": (z0 - 1, z1), "stddev": (0.3, n / 2), "amplitude": (0, None)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        fit = fitting.TRFLSQFitter()(start, z, s)
    line = {"z": float(fit.mean.value), "fwhm_z": float(fit.stddev.value) * FWHM_PER_SIGMA, "peak": float(fit.amplitude.value)}
    if noise is None:
        return line
    jac = np.stack(fit.fit_deriv(z, *fit.parameters), axis=1)
    cov = _sandwich(jac, jac * noise[lo:hi, None] ** 2)  # independent channels: C is diagonal
    err_peak, err_z, err_sigma = np.sqrt(np.clip(np.diag(cov), 0, None))
    return line | {"err_z": float(err_z), "err_fwhm_z": float(err_sigma) * FWHM_PER_SIGMA,
                   "err_peak": float(np.hypot(err_peak, np.sqrt(continuum_var)))}
