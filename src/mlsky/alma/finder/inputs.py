"""The inputs of the three networks, cut from a :class:`~mlsky.alma.finder.cube.Cube`.

Shared by the pipeline (:mod:`mlsky.alma.finder.pipeline`) and training
(:mod:`mlsky.alma.finder.train`), so that both see exactly the same images and spectra.
"""

from __future__ import annotations

import numpy as np
from astropy.stats import mad_std
from scipy import ndimage

from mlsky.alma.finder.cube import Cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA


def integrated_image(cube: Cube, channels: slice = slice(None)) -> np.ndarray:
    """Sum of the noise-normalised channels over ``channels``, divided by sqrt(n): unit noise."""
    snr = cube.snr_of(channels)
    return (snr.sum(axis=0) / np.sqrt(max(len(snr), 1))).astype(np.float32)


def box_spectrum(cube: Cube, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """The dirty spectrum summed over a 2-D box, standardised by its median and robust rms."""
    spec = cube.snr_of(slice(None), slice(y0, y1), slice(x0, x1)).sum(axis=(1, 2)).astype(np.float64)
    scale = mad_std(spec)
    return ((spec - np.median(spec)) / (scale if scale > 0 else 1.0)).astype(np.float32)


def cutout(image: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    """A ``size x size`` cutout centred on pixel ``(x, y)``, zero outside the image."""
    out = np.zeros((size, size), np.float32)
    cx, cy = int(round(x)) - size // 2, int(round(y)) - size // 2
    ys, xs = slice(max(cy, 0), min(cy + size, image.shape[0])), slice(max(cx, 0), min(cx + size, image.shape[1]))
    out[ys.start - cy : ys.stop - cy, xs.start - cx : xs.stop - cx] = image[ys, xs]
    return out


def emission_ranges(prob: np.ndarray, threshold: float = 0.5, min_channels: int = 1) -> list[tuple[int, int]]:
    """Runs of channels where ``prob > threshold`` (gaps of one channel closed), as (z0, z1)."""
    on = ndimage.binary_closing(prob > threshold, structure=np.ones(3)) | (prob > threshold)
    labels, n = ndimage.label(on)
    runs = [tuple(int(v) for v in (np.flatnonzero(labels == k)[[0, -1]] + [0, 1])) for k in range(1, n + 1)]
    return [r for r in runs if r[1] - r[0] >= min_channels]


def tiles(size: int, tile: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``size`` with at least a quarter overlap."""
    if size <= tile:
        return [0]
    step = tile * 3 // 4
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def probability_map(model, image: np.ndarray, device=None) -> np.ndarray:
    """Blobs Finder's map for an image of any size: zero-padded or tiled to its input.

    Where tiles overlap, the larger probability is kept.
    """
    import torch

    n = model.input_size
    ny, nx = image.shape
    padded = np.zeros((max(ny, n), max(nx, n)), np.float32)
    padded[:ny, :nx] = image
    out = np.zeros_like(padded)
    patches, where = [], []
    for y0 in tiles(padded.shape[0], n):
        for x0 in tiles(padded.shape[1], n):
            patches.append(padded[y0 : y0 + n, x0 : x0 + n])
            where.append((y0, x0))
    with torch.no_grad():
        probs = model(torch.from_numpy(np.stack(patches)[:, None]).to(device or "cpu")).cpu().numpy()[:, 0]
    for (y0, x0), p in zip(where, probs):
        np.maximum(out[y0 : y0 + n, x0 : x0 + n], p, out=out[y0 : y0 + n, x0 : x0 + n])
    return out[:ny, :nx]


# --- the catalogue ---------------------------------------------------------------------
def fwhm_z_from_range(z0: int, z1: int) -> float:
    """Line FWHM (channels) of an emission range taken as the truth's box, +-3 sigma."""
    return max(z1 - z0 - 1, 1) * FWHM_PER_SIGMA / 6.0


def battery_input(cube: Cube, x: float, y: float, z0: int, z1: int, size: int) -> np.ndarray:
    """The ResNets' input: the noise-normalised sum over ``[z0, z1)`` around ``(x, y)``, / 10.

    A plain sum (not a mean) keeps the flux in the image; dividing by 10 keeps typical
    values of order one.
    """
    image = cube.snr_of(slice(z0, z1)).sum(axis=0)
    return cutout(image, x, y, size) / 10.0


#: Line widths (FWHM, channels) of the default matched filters: from one channel to a wide line.
FILTER_WIDTHS = (1, 2, 4, 8, 16)


def matched_filter_images(cube: Cube, widths=FILTER_WIDTHS) -> np.ndarray:
    """The cube matched-filtered along frequency for each line width, max over channels.

    Each channel is first divided by its noise; the cube is then smoothed along frequency with
    a Gaussian of each FWHM in ``widths`` (channels), divided by the smoothed cube's robust
    noise, and the maximum over channels is kept. A line of width ``w`` stands out most in the
    plane filtered at ``w``, instead of being diluted by every empty channel as in the
    frequency-integrated image.

    Returns
    -------
    numpy.ndarray
        ``(len(widths), ny, nx)`` float32, in units of each filtered cube's noise.
    """
    return _matched_filtered(cube, widths, negated=False)[0]


def matched_filter_pair(cube: Cube, widths=FILTER_WIDTHS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`matched_filter_images` of the cube and of the negated cube, from one smoothing.

    The filter is linear and the robust noise is the same for both signs, so the negated
    cube's planes are the filtered cube's minimum over channels, negated: the same numbers as
    filtering ``-cube``, at half the cost.
    """
    return _matched_filtered(cube, widths, negated=True)


#: Voxels that :func:`sampled_noise` reads at most: the robust rms of a quarter million voxels
#: is good to about 0.5% (measured within 0.4% on 128x256x256 cubes, whose noise is correlated
#: over a beam), and reading every voxel of a large cube costs more than filtering it.
NOISE_SAMPLES = 1 << 18


def sampled_noise(values: np.ndarray, samples: int = NOISE_SAMPLES) -> float:
    """Robust rms (:func:`astropy.stats.mad_std`) of an array from an evenly spaced sample of at
    most about ``samples`` values (every voxel of a smaller one), as SoFiA-2 samples its noise.

    >>> rng = np.random.default_rng(1)
    >>> round(sampled_noise(rng.normal(0, 2, (64, 128, 128)).astype(np.float32)), 2)
    2.0
    """
    # An odd step does not fall on the same columns of every row.
    step = max(1, values.size // samples) | 1
    return float(mad_std(values.reshape(-1)[::step]))


def _matched_filtered(cube: Cube, widths, negated: bool) -> tuple[np.ndarray, ...]:
    snr = cube.snr
    planes, negated_planes = [], []
    for width in widths:
        sigma = width / FWHM_PER_SIGMA
        smooth = ndimage.gaussian_filter1d(snr, sigma, axis=0, mode="constant") if sigma > 0.3 else snr
        noise = sampled_noise(smooth)
        planes.append(smooth.max(axis=0) / noise)
        if negated:
            negated_planes.append(-smooth.min(axis=0) / noise)
    return tuple(np.stack(p).astype(np.float32) for p in ((planes, negated_planes) if negated else (planes,)))


def probability_map_fcn(model, planes: np.ndarray, device=None) -> np.ndarray:
    """A fully convolutional finder's map of ``(C, ny, nx)`` planes: zero-padded to its multiple, one pass."""
    import torch

    c, ny, nx = planes.shape
    m = model.multiple
    padded = np.zeros((c, -(-ny // m) * m, -(-nx // m) * m), np.float32)
    padded[:, :ny, :nx] = planes
    with torch.no_grad():
        prob = model(torch.from_numpy(padded[None]).to(device or "cpu")).cpu().numpy()[0, 0]
    return prob[:ny, :nx]
