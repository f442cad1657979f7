"""Sky model cubes: elliptical 2-D Gaussian sources times Gaussian emission lines.

A source is a row of an astropy Table: position ``x, y`` (0-based pixels, x along the last
array axis), ``fwhm_x, fwhm_y`` (pixels, along the source's own axes), ``pa_deg`` (angle of
its x axis from +x towards +y), line centre ``z`` and width ``fwhm_z`` (channels), and its
brightness: ``peak_jy_per_pix`` or ``flux`` (Jy, the spatially integrated flux density at
the line peak, ``flux = peak * 2 pi sigma_x sigma_y``). Optional ``continuum_jy`` (integrated
continuum flux density at the centre channel) and ``spectral_index`` add a continuum
``continuum_jy * (nu / nu_c) ** spectral_index`` with the same spatial shape.

Examples
--------
>>> from astropy.table import Table
>>> src = Table(dict(x=[32.0], y=[30.0], z=[16.0], fwhm_x=[4.0], fwhm_y=[3.0], pa_deg=[20.0],
...                  fwhm_z=[5.0], peak_jy_per_pix=[1e-3]))
>>> sky_cube(src, (32, 64, 64)).shape
(32, 64, 64)
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
#: The bounding box of a source reaches this many sigma from its centre along each axis.
BOX_SIGMA = 3.0
REQUIRED = ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z")


def _box(centre: float, half: float, size: int) -> tuple[int, int]:
    return max(int(np.floor(centre - half)), 0), min(int(np.ceil(centre + half)) + 1, size)


def canonical_shape(fwhm_x, fwhm_y, pa_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same ellipses with ``fwhm_x >= fwhm_y`` (swap and turn by 90 degrees where needed).

    (a, b, pa) and (b, a, pa + 90) are one ellipse; a regressor, and a residual, need one of the two.
    """
    fx, fy, pa = (np.asarray(v, float) for v in (fwhm_x, fwhm_y, pa_deg))
    swap = fx < fy
    return np.where(swap, fy, fx), np.where(swap, fx, fy), np.where(swap, pa + 90.0, pa) % 180.0


def validate_sources(sources: Table, shape: tuple[int, int, int]) -> Table:
    """Check a sources table against a cube shape and complete it (flux, peak, bounding box).

    Raises
    ------
    ValueError
        A required column is missing, a value is not finite, a width is not positive, or a
        source centre lies outside the cube.
    """
    n_chan, ny, nx = shape
    if min(shape) < 1:
        raise ValueError(f"cube shape {shape} must be positive in every axis")
    missing = [c for c in REQUIRED if c not in sources.colnames]
    if "peak_jy_per_pix" not in sources.colnames and "flux" not in sources.colnames:
        missing.append("peak_jy_per_pix or flux")
    if missing:
        raise ValueError(f"sources table lacks column(s): {', '.join(missing)}")
    table = Table(sources, copy=True)
    for name in table.colnames:
        if table[name].dtype.kind == "f" and not np.isfinite(np.asarray(table[name])).all():
            raise ValueError(f"sources table column {name!r} holds NaN or infinite values")
    for name in ("fwhm_x", "fwhm_y", "fwhm_z"):
        bad = np.flatnonzero(np.asarray(table[name]) <= 0)
        if len(bad):
            raise ValueError(f"source(s) {bad.tolist()} have {name} <= 0; widths must be positive")
    for name, size in (("x", nx), ("y", ny), ("z", n_chan)):
        values = np.asarray(table[name], dtype=float)
        bad = np.flatnonzero((values < 0) | (values > size - 1))
        if len(bad):
            raise ValueError(
                f"source(s) {bad.tolist()} lie outside the cube: {name}={values[bad].tolist()} "
                f"is not within [0, {size - 1}] for a cube of shape {shape}"
            )
    sx = np.asarray(table["fwhm_x"], float) / FWHM_PER_SIGMA
    sy = np.asarray(table["fwhm_y"], float) / FWHM_PER_SIGMA
    if "peak_jy_per_pix" in table.colnames:
        table["flux"] = np.asarray(table["peak_jy_per_pix"], float) * 2 * np.pi * sx * sy
    else:
        table["peak_jy_per_pix"] = np.asarray(table["flux"], float) / (2 * np.pi * sx * sy)
    theta = np.radians(np.asarray(table["pa_deg"], float))
    half_x = BOX_SIGMA * np.hypot(sx * np.cos(theta), sy * np.sin(theta))
    half_y = BOX_SIGMA * np.hypot(sx * np.sin(theta), sy * np.cos(theta))
    half_z = BOX_SIGMA * np.asarray(table["fwhm_z"], float) / FWHM_PER_SIGMA
    boxes = {"x": [], "y": [], "z": []}
    for row, hx, hy, hz in zip(table, half_x, half_y, half_z):
        for axis, half, size in (("x", hx, nx), ("y", hy, ny), ("z", hz, n_chan)):
            boxes[axis].append(_box(float(row[axis]), half, size))
    for axis in "xyz":
        lo, hi = zip(*boxes[axis]) if len(table) else ((), ())
        table[f"{axis}0"] = np.array(lo, dtype=int)
        table[f"{axis}1"] = np.array(hi, dtype=int)
    for name, unit in (("flux", "Jy"), ("peak_jy_per_pix", "Jy / pix"), ("pa_deg", "deg")):
        table[name].unit = unit
    return table


def source_image(row) -> tuple[np.ndarray, slice, slice]:
    """A source's 2-D Gaussian (peak 1) on its bounding box, with the box's slices."""
    sx, sy = row["fwhm_x"] / FWHM_PER_SIGMA, row["fwhm_y"] / FWHM_PER_SIGMA
    theta = np.radians(row["pa_deg"])
    ys, xs = slice(int(row["y0"]), int(row["y1"])), slice(int(row["x0"]), int(row["x1"]))
    y, x = np.mgrid[ys, xs]
    dx, dy = x - row["x"], y - row["y"]
    a = dx * np.cos(theta) + dy * np.sin(theta)
    b = -dx * np.sin(theta) + dy * np.cos(theta)
    return np.exp(-0.5 * ((a / sx) ** 2 + (b / sy) ** 2)), ys, xs


def sky_cube(sources: Table, shape: tuple[int, int, int], freqs_hz: np.ndarray | None = None) -> np.ndarray:
    """The sky model (Jy/pixel, float32) of a sources table on a cube of ``shape``.

    Each source is evaluated on its bounding box (``BOX_SIGMA`` sigma); outside it, its
    Gaussian is below 1.1% of the peak along each axis and is left out (0.8% of its flux). Blended sources add.
    """
    n_chan = shape[0]
    table = sources if "x0" in sources.colnames else validate_sources(sources, shape)
    cube = np.zeros(shape, np.float32)
    chan = np.arange(n_chan)
    for row in table:
        image, ys, xs = source_image(row)
        zs = slice(int(row["z0"]), int(row["z1"]))
        line = np.exp(-0.5 * ((chan[zs] - row["z"]) / (row["fwhm_z"] / FWHM_PER_SIGMA)) ** 2)
        cube[zs, ys, xs] += (row["peak_jy_per_pix"] * line[:, None, None] * image).astype(np.float32)
        cont = float(row["continuum_jy"]) if "continuum_jy" in table.colnames else 0.0
        if cont:
            if freqs_hz is None:
                raise ValueError("a continuum needs the channel frequencies (freqs_hz)")
            alpha = float(row["spectral_index"]) if "spectral_index" in table.colnames else 0.0
            spec = (freqs_hz / freqs_hz[n_chan // 2]) ** alpha
            norm = cont / (2 * np.pi * row["fwhm_x"] * row["fwhm_y"] / FWHM_PER_SIGMA**2)
            cube[:, ys, xs] += (norm * spec[:, None, None] * image).astype(np.float32)
    return cube


def random_sources(rng: np.random.Generator, shape: tuple[int, int, int], n_companions: int | None = None) -> Table:
    """A random sky as in Delli Veneri et al. (2023): a central source plus companions.

    The central source sits within 2 pixels of the cube's centre (its line within 10% of the
    band's centre); 0-4 companions anywhere in the inner 80% of each axis, so blends happen.
    Sizes are 2-8 pixels FWHM per axis (the beam is about 6-7 pixels at 0.1"/pixel with
    alma.cycle9.3 at 230 GHz), line widths 3-12 channels FWHM (for 128 channels; scaled for
    fewer), position angles uniform, peaks log-uniform between 0.02 and 2 mJy/pixel; a third
    of the sources have a continuum (up to 10% of the line flux, spectral index 2-4).
    """
    n_chan, ny, nx = shape
    n = 1 + (int(rng.integers(0, 5)) if n_companions is None else n_companions)
    margin = 0.1

    def inside(size: int) -> np.ndarray:
        return rng.uniform(margin * (size - 1), (1 - margin) * (size - 1), n)

    x, y, z = inside(nx), inside(ny), inside(n_chan)
    x[0] = (nx - 1) / 2 + rng.uniform(-2, 2)
    y[0] = (ny - 1) / 2 + rng.uniform(-2, 2)
    z[0] = (n_chan - 1) / 2 + rng.uniform(-0.1, 0.1) * n_chan
    peak = 10 ** rng.uniform(np.log10(2e-5), np.log10(2e-3), n)
    fwhm_x, fwhm_y = rng.uniform(2, 8, n), rng.uniform(2, 8, n)
    # Most sources are line emitters; a third also have a continuum of up to a tenth of
    # their line peak, with a dust-like spectral index.
    has_continuum = rng.random(n) < 1 / 3
    line_flux = peak * 2 * np.pi * fwhm_x * fwhm_y / FWHM_PER_SIGMA**2
    return Table(
        dict(
            x=x,
            y=y,
            z=z,
            fwhm_x=fwhm_x,
            fwhm_y=fwhm_y,
            pa_deg=rng.uniform(0, 180, n),
            fwhm_z=rng.uniform(3, 12, n) * min(max(n_chan / 128, 0.25), 1.0),
            peak_jy_per_pix=peak,
            continuum_jy=np.where(has_continuum, line_flux * rng.uniform(0, 0.1, n), 0.0),
            spectral_index=np.where(has_continuum, rng.uniform(2, 4, n), 0.0),
        )
    )
