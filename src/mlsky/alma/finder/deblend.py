"""Deblending: is a detection one source or two, closer than a beam?

Blobs Finder sees a close pair as one blob, and when the two lines overlap Deep GRU marks one
emission range. Classical finders split such blends by their structure; here the detection's
sub-cube (in units of the channel noise) is fitted by one and by two 3-D Gaussians, each a
beam-convolved elliptical Gaussian on the sky times a Gaussian line, and the pair is kept when

- the second component improves the fit by at least :data:`MIN_GAIN` in chi-square per beam
  area (the noise of a dirty cube is correlated over the beam, so a beam area of pixels holds
  about one independent noise value), and
- the two are at least :data:`MIN_SEPARATION` apart, in beams on the sky and line widths
  (sigma) in frequency added in quadrature. A bright source's dirty-beam shape is not quite a
  Gaussian, and a second component fitted to that mismatch gains much but sits on the first.

Both numbers were chosen on simulated cubes of this package's simulator (seeds 8,200,000 on for
isolated sources, 8,300,000 on for pairs placed within a beam), never on the CASA cubes:
``benchmarks/alma_deblend.py`` prints how often isolated sources are split and pairs are found.

Examples
--------
>>> from astropy.table import Table
>>> from mlsky.alma.sim.simulate import simulate_cube
>>> from mlsky.alma.finder import as_cube
>>> pair = Table(dict(x=[30.0, 34.0], y=[32.0, 33.0], z=[12.0, 20.0], fwhm_x=[3.0, 3.0], fwhm_y=[3.0, 3.0],
...                   pa_deg=[0.0, 0.0], fwhm_z=[6.0, 6.0], peak_jy_per_pix=[1.5e-3, 1.5e-3]))
>>> cube = as_cube(simulate_cube(pair, shape=(32, 64, 64), seed=1))
>>> len(split_blend(cube, 32.0, 32.5, 6, 27))
2
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from astropy import units as u
from scipy.optimize import least_squares

from mlsky.alma.finder.cube import Cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA

__all__ = ["BlendFit", "Component", "beam_major_pix", "blend_fit", "distinct", "separation", "split_blend", "subtract"]

#: Least chi-square gain of a second component, per beam area of pixels.
MIN_GAIN = 45.0
#: Least separation of the pair, in beams and line sigmas added in quadrature.
MIN_SEPARATION = 1.0

_PARAMS = 8  # amplitude, x, y, z, sigma_x, sigma_y, theta, sigma_z


@dataclass(frozen=True)
class Component:
    """One fitted 3-D Gaussian: peak (in units of the channel noise), position, widths."""

    amplitude: float
    x: float
    y: float
    z: float
    sigma_x: float
    sigma_y: float
    theta: float
    sigma_z: float

    def channels(self, n_chan: int, half_width: float = 2.5) -> tuple[int, int]:
        """The channel range ``[z0, z1)`` of the line, ``half_width`` sigma either side."""
        z0 = int(np.floor(self.z - half_width * self.sigma_z))
        z1 = int(np.ceil(self.z + half_width * self.sigma_z)) + 1
        return max(z0, 0), min(max(z1, z0 + 2), n_chan)

    def model(self, zz: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return _gaussians(np.array([[getattr(self, f) for f in Component.__dataclass_fields__]]), zz, yy, xx)


def _gaussians(p: np.ndarray, zz: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(zz.shape, yy.shape, xx.shape))
    for a, x, y, z, sx, sy, t, sz in p:
        dx, dy = xx - x, yy - y
        u_ = dx * np.cos(t) + dy * np.sin(t)
        v_ = -dx * np.sin(t) + dy * np.cos(t)
        out = out + a * np.exp(-0.5 * ((u_ / sx) ** 2 + (v_ / sy) ** 2 + ((zz - z) / sz) ** 2))
    return out


def _jacobian(p: np.ndarray, zz: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """d model / d parameters, one column per parameter (the Gaussians' derivatives in closed form)."""
    columns = []
    for a, x, y, z, sx, sy, t, sz in p:
        c, s = np.cos(t), np.sin(t)
        dx, dy, dz = xx - x, yy - y, zz - z
        u_, v_ = dx * c + dy * s, -dx * s + dy * c
        e = np.exp(-0.5 * ((u_ / sx) ** 2 + (v_ / sy) ** 2 + (dz / sz) ** 2))
        ae = a * e
        d_q = (2 * (-u_ * c / sx**2 + v_ * s / sy**2), 2 * (-u_ * s / sx**2 - v_ * c / sy**2), -2 * dz / sz**2,
               -2 * u_**2 / sx**3, -2 * v_**2 / sy**3, 2 * u_ * v_ * (1 / sx**2 - 1 / sy**2), -2 * dz**2 / sz**3)
        columns += [e] + [-0.5 * ae * q for q in d_q]
    shape = np.broadcast_shapes(zz.shape, yy.shape, xx.shape)
    return np.stack([np.broadcast_to(col, shape).ravel() for col in columns], axis=1)


def _fit(data, zz, yy, xx, start: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, float]:
    n = len(start) // _PARAMS
    start = np.clip(start, lower + 1e-9, upper - 1e-9)

    def residual(q):
        return (_gaussians(q.reshape(n, _PARAMS), zz, yy, xx) - data).ravel()

    def jacobian(q):
        return _jacobian(q.reshape(n, _PARAMS), zz, yy, xx)

    fit = least_squares(residual, start, jac=jacobian, bounds=(lower, upper), x_scale="jac", max_nfev=100, tr_solver="lsmr")
    return fit.x.reshape(n, _PARAMS), float(2 * fit.cost)


def split_blend(cube: Cube, x: float, y: float, z0: int, z1: int) -> list[Component]:
    """Fit a detection at ``(x, y)`` with emission in channels ``[z0, z1)`` by one and by two
    3-D Gaussians; return the two components when the criteria of this module hold, else the one.

    Coordinates are the cube's pixels and channels; amplitudes are in units of the channel noise.
    """
    fit = blend_fit(cube, x, y, z0, z1)
    if fit.pair is not None and fit.gain >= MIN_GAIN and fit.separation >= MIN_SEPARATION:
        return list(fit.pair)
    return [fit.single]


@dataclass(frozen=True)
class BlendFit:
    """The one- and two-component fits of a detection and the numbers :func:`split_blend` tests."""

    single: Component
    pair: tuple[Component, Component] | None
    first_gain: float  #: chi-square explained by the single component, per beam area
    gain: float  #: chi-square the second component adds, per beam area
    separation: float  #: of the pair, in beams and line sigmas added in quadrature


def blend_fit(cube: Cube, x: float, y: float, z0: int, z1: int) -> BlendFit:
    """One and (when the single component explains enough for a second to pass) two 3-D
    Gaussians fitted to the detection's sub-cube; see :func:`split_blend`."""
    n_chan, ny, nx = cube.data.shape
    bmaj = beam_major_pix(cube)
    sigma_beam = bmaj / FWHM_PER_SIGMA
    half = int(np.ceil(1.5 * bmaj))
    xi, yi = int(round(x)), int(round(y))
    width = max(z1 - z0, 2)
    zs = slice(max(z0 - width // 2, 0), min(z1 + width // 2, n_chan))
    ys, xs = slice(max(yi - half, 0), min(yi + half + 1, ny)), slice(max(xi - half, 0), min(xi + half + 1, nx))
    data = cube.snr_of(zs, ys, xs).astype(float)
    zz, yy, xx = np.ogrid[zs, ys, xs]
    sigma_z0 = max((z1 - z0) / 6.0, 0.7)
    lo1 = np.array([0.0, xs.start, ys.start, z0 - 1.0, 0.8 * sigma_beam, 0.8 * sigma_beam, -np.pi, 0.4])
    hi1 = np.array([np.inf, xs.stop - 1, ys.stop - 1, z1 + 0.0, 4 * sigma_beam, 4 * sigma_beam, np.pi, max(z1 - z0, 2.0)])
    peak = max(float(data.max()), 1.0)
    one, chi1 = _fit(data, zz, yy, xx, np.array([peak, x, y, (z0 + z1 - 1) / 2, sigma_beam, sigma_beam, 0.0, sigma_z0]), lo1, hi1)
    first_gain = (float((data**2).sum()) - chi1) / cube.beam_area_pix
    single = Component(*one[0])
    # A second component can gain at most what the single one leaves above the noise (a voxel's
    # expected square is 1 in noise units); half a gain of margin for the noise's fluctuation.
    if (chi1 - data.size) / cube.beam_area_pix < MIN_GAIN / 2:
        return BlendFit(single, None, first_gain, 0.0, 0.0)
    # Two starts: the pair split along the line, and a second component where the single one leaves most.
    rest = data - _gaussians(one, zz, yy, xx)
    kz, ky, kx = np.unravel_index(np.argmax(rest), rest.shape)
    a, cx, cy, cz = one[0][:4]
    sz = one[0][7]
    starts = [np.r_[[a, cx, cy, cz - sz, *one[0][4:7], sz / 1.5], [a, cx, cy, cz + sz, *one[0][4:7], sz / 1.5]],
              np.r_[one[0], [max(rest[kz, ky, kx], 1.0), xs.start + kx, ys.start + ky, zs.start + kz, sigma_beam,
                             sigma_beam, 0.0, sigma_z0]]]
    lo2, hi2 = np.tile(lo1, 2), np.tile(hi1, 2)
    two, chi2 = min((_fit(data, zz, yy, xx, s, lo2, hi2) for s in starts), key=lambda r: r[1])
    p, q = sorted(two, key=lambda c: c[3])
    apart = separation((p[1], p[2], p[3], p[7]), (q[1], q[2], q[3], q[7]), bmaj)
    return BlendFit(single, (Component(*p), Component(*q)), first_gain, (chi1 - chi2) / cube.beam_area_pix, apart)


def beam_major_pix(cube: Cube) -> float:
    """The beam's major axis in pixels (the header's beam when the cube has one)."""
    if cube.beam is not None:
        return float(cube.beam.major.to_value(u.arcsec)) / cube.pixel_scale_arcsec
    return cube.beam_fwhm_pix


def separation(a: tuple[float, float, float, float], b: tuple[float, float, float, float], bmaj: float) -> float:
    """How far apart two sources ``(x, y, z, sigma_z)`` are: the sky distance in beams (major
    axis ``bmaj`` pixels) and the line distance in line sigmas (the rms of the two), added in
    quadrature."""
    return float(np.hypot(np.hypot(a[0] - b[0], a[1] - b[1]) / bmaj, (a[2] - b[2]) / np.sqrt((a[3] ** 2 + b[3] ** 2) / 2)))


def distinct(rows: list[dict], bmaj: float) -> list[dict]:
    """The measured detections less those that repeat a more significant one (``snr``).

    Two candidates can reach the same source: two neighbouring boxes each deblended into the same
    pair, or two measurements drawn to one bright source. Detections closer than
    :data:`MIN_SEPARATION` (:func:`separation`, from the measured ``x, y, z, fwhm_z``) are the
    ones this module does not tell apart, so only the most significant of them is kept.
    """
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["snr"])
    kept: list[int] = []
    for i in order:
        a = _place(rows[i])
        if not any(separation(a, _place(rows[j]), bmaj) < MIN_SEPARATION for j in kept):
            kept.append(i)
    return [rows[i] for i in sorted(kept)]


def _place(row: dict) -> tuple[float, float, float, float]:
    return row["x"], row["y"], row["z"], row["fwhm_z"] / FWHM_PER_SIGMA


def subtract(cube: Cube, component: Component) -> Cube:
    """The cube with ``component``'s model taken out (within 4 sigma of it), to measure its neighbour."""
    n_chan, ny, nx = cube.data.shape
    r = 4 * max(component.sigma_x, component.sigma_y)
    zs = slice(max(int(component.z - 4 * component.sigma_z), 0), min(int(component.z + 4 * component.sigma_z) + 2, n_chan))
    ys = slice(max(int(component.y - r), 0), min(int(component.y + r) + 2, ny))
    xs = slice(max(int(component.x - r), 0), min(int(component.x + r) + 2, nx))
    zz, yy, xx = np.ogrid[zs, ys, xs]
    data = cube.data.copy()
    data[zs, ys, xs] -= (component.model(zz, yy, xx) * cube.noise[zs, None, None]).astype(data.dtype)
    return replace(cube, data=data)
