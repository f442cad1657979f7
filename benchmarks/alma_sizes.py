"""How well can a source's size be measured at all? The finder's measurement against an oracle fit.

On held-out simulated 64 x 128 x 128 cubes, every source of peak SNR > 5 with no other source
within three beams (one Gaussian is fitted, so blends are left out) is observed again with
``--draws`` noise draws (same sky, other thermal noise), and its size is measured four ways:

- **oracle**: told the true line, the line-weighted image (the best channel weighting there is)
  is fitted, either with a 2-D Gaussian at the true position whose amplitude and shape alone are
  free, then deconvolved from the restoring beam (``restoring``), or with the source's own
  Gaussian convolved with the dirty beam, started at the true position (``dirty``);
- **mlsky**: :func:`mlsky.alma.finder.measure.measure_source` as the finder calls it, given the
  true channel range and a position off by about a beam's sixth (as a detector gives it),
  without the dirty beam (``restoring``) and with it (``dirty``, ``psf=``).

Printed: the residual mean and std (true - measured) of the major and minor FWHM and the std of
the position angle (axis ratio >= 1.5), pooled over sources and draws, the ratio of mlsky's
std to the oracle's through the dirty beam, and the std of mlsky's pulls there (measured - true
over its 1-sigma error: 1 when the errors are right). The oracle knows what no finder knows, so its std
says how far sizes can be measured at these SNRs; chapter 4's size targets are read against it.

Run: ``python benchmarks/alma_sizes.py [--cubes 20] [--draws 8]``
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
from astropy import units as u
from astropy.modeling import fitting, models
from astropy.utils.exceptions import AstropyUserWarning

import mlsky
from mlsky.alma.finder import as_cube
from mlsky.alma.finder.measure import _beam_transform, _deconvolve, _fit_through_beam, cube_beam, measure_source
from mlsky.alma.metrics import angle_difference, beam_fwhm_of
from mlsky.alma.sim.simulate import random_cube, simulate_cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA, canonical_shape

SHAPE = (64, 128, 128)
SEED = 9_300_000
SKY_COLUMNS = ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z", "peak_jy_per_pix", "continuum_jy", "spectral_index")


def _line_image(cube, source, ys, xs) -> np.ndarray:
    line = np.exp(-0.5 * ((np.arange(cube.data.shape[0]) - source["z"]) / (source["fwhm_z"] / FWHM_PER_SIGMA)) ** 2)
    return np.tensordot(line, cube.snr[:, ys, xs], axes=1) / np.sqrt((line**2).sum())


def _window(cube, source) -> tuple[slice, slice, float]:
    beam, pix = cube_beam(cube), cube.pixel_scale_arcsec
    bmaj = float(beam.major.to_value(u.arcsec)) / pix
    half = int(np.ceil(1.5 * bmaj))
    xi, yi = int(round(source["x"])), int(round(source["y"]))
    return slice(max(yi - half, 0), yi + half + 1), slice(max(xi - half, 0), xi + half + 1), bmaj


def oracle_through_beam(cube, source) -> tuple[float, float, float]:
    """The source's FWHMs and angle fitted through the dirty beam with the true line."""
    ys, xs, bmaj = _window(cube, source)
    # No noise autocorrelation: the oracle's shape is all it gives, not its errors.
    shape, _ = _fit_through_beam(_line_image(cube, source, ys, xs), source["x"], source["y"], None, bmaj_pix=bmaj,
                                 ys=ys, xs=xs, beam_ft=_beam_transform(cube.psf, ys, xs))
    return shape["fwhm_x"], shape["fwhm_y"], shape["pa_deg"]


def oracle_shape(cube, source) -> tuple[float, float, float]:
    """Deconvolved FWHMs and angle fitted with the true position and line (see the module)."""
    ys, xs, bmaj = _window(cube, source)
    sigma_beam = bmaj / FWHM_PER_SIGMA
    image = _line_image(cube, source, ys, xs)
    yy, xx = np.mgrid[ys, xs]
    start = models.Gaussian2D(max(image.max(), 1.0), source["x"], source["y"], sigma_beam, sigma_beam, 0.0,
                              fixed={"x_mean": True, "y_mean": True},
                              bounds={"x_stddev": (0.3 * sigma_beam, 6 * sigma_beam), "y_stddev": (0.3 * sigma_beam, 6 * sigma_beam)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        fit = fitting.TRFLSQFitter()(start, xx, yy, image)
    return _deconvolve(fit.x_stddev.value * FWHM_PER_SIGMA, fit.y_stddev.value * FWHM_PER_SIGMA,
                       np.degrees(fit.theta.value) % 180, cube_beam(cube), cube.pixel_scale_arcsec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=20, help="simulated skies (default 20)")
    parser.add_argument("--draws", type=int, default=8, help="noise draws of each sky (default 8)")
    args = parser.parse_args()
    print(mlsky.describe())
    rng = np.random.default_rng(0)
    residuals = {name: [] for name in ("oracle restoring", "oracle dirty", "mlsky restoring", "mlsky dirty")}
    pulls = []
    sources = set()
    for i in range(args.cubes):
        sky = random_cube(SEED + i, shape=SHAPE).truth
        sky = sky[[c for c in SKY_COLUMNS if c in sky.colnames]]
        for draw in range(args.draws):
            sim = simulate_cube(sky, shape=SHAPE, seed=1000 + draw)
            cube = as_cube(sim, psf=sim.beam)
            beam = beam_fwhm_of(sim.truth)
            for k, src in enumerate(sim.truth):
                others = np.hypot(sim.truth["x"] - src["x"], sim.truth["y"] - src["y"])
                if src["snr"] <= 5 or np.sum(others < 3 * beam) > 1:
                    continue
                sources.add((i, k))
                jx, jy = rng.normal(0, 1.0, 2)
                at = (cube, src["x"] + jx, src["y"] + jy, int(src["z0"]), int(src["z1"]))
                m, mp = measure_source(*at), measure_source(*at, psf=cube.psf)
                true = canonical_shape(src["fwhm_x"], src["fwhm_y"], src["pa_deg"])
                for name, shape in (("oracle restoring", oracle_shape(cube, src)),
                                    ("oracle dirty", oracle_through_beam(cube, src)),
                                    ("mlsky restoring", (m["fwhm_x"], m["fwhm_y"], m["pa_deg"])),
                                    ("mlsky dirty", (mp["fwhm_x"], mp["fwhm_y"], mp["pa_deg"]))):
                    got = canonical_shape(*shape)
                    residuals[name].append((float(true[0] - got[0]), float(true[1] - got[1]),
                                            float(angle_difference(true[2], got[2])), float(true[0] / true[1])))
                pulls.append(((mp["fwhm_x"] - true[0]) / mp["err_fwhm_x"], (mp["fwhm_y"] - true[1]) / mp["err_fwhm_y"],
                              float(angle_difference(mp["pa_deg"], true[2])) / mp["err_pa_deg"], float(true[0] / true[1])))
    print(f"{len(sources)} lone sources of peak SNR > 5 in {args.cubes} skies, {args.draws} noise draws each")
    print(f"{'measurement':18s} {'major mean':>10s} {'major std':>10s} {'minor mean':>11s} {'minor std':>10s} {'pa std':>8s}"
          "  (px, deg)")
    stds = {}
    for name, rows in residuals.items():
        r = np.asarray(rows)
        elongated = r[:, 3] >= 1.5
        stds[name] = (r[:, 0].std(), r[:, 1].std(), r[elongated, 2].std())
        print(f"{name:18s} {r[:, 0].mean():10.2f} {stds[name][0]:10.2f} {r[:, 1].mean():11.2f} {stds[name][1]:10.2f}"
              f" {stds[name][2]:8.1f}")
    ratio = [m / o for m, o in zip(stds["mlsky dirty"], stds["oracle dirty"])]
    print(f"mlsky std / oracle std (dirty beam): major {ratio[0]:.2f}, minor {ratio[1]:.2f}, angle {ratio[2]:.2f}")
    pulls = np.asarray(pulls)
    print(f"std of mlsky's pulls (measured - true) / err (dirty beam; 1 if the errors are right): major "
          f"{pulls[:, 0].std():.2f}, minor {pulls[:, 1].std():.2f}, angle {pulls[pulls[:, 3] >= 1.5, 2].std():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
