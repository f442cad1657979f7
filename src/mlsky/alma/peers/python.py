"""Classical source finders in Python, run on the same cubes as the deep-learning pipeline.

- :class:`BlobcatFinder` -- a blobcat-like flood fill (Hales et al. 2012): voxels above
  ``seed_sigma`` grow into every connected voxel above ``flood_sigma`` (here in 3-D);
- :class:`SofiaFinder` -- a SoFiA-like smooth-and-clip (Serra et al. 2015; Westmeier et al.
  2021): the cube is smoothed with several spatial Gaussians and spectral boxcars, each
  smoothed cube clipped at ``threshold`` times its own noise, the masks joined, connected
  sources kept above a minimum size and a reliability cut made by comparing each source with
  the negative detections (noise has as many of those as false positive ones); the fallback
  when the real SoFiA-2 (:class:`mlsky.alma.peers.sofia2.Sofia2Finder`) is not installed;
- :class:`PhotutilsFinder` -- photutils' image segmentation (with deblending) of the
  frequency-integrated image, the emission range then read from each segment's spectrum.

Each finder is an estimator: parameters in ``__init__``; :meth:`fit` tunes the threshold and
minimum size by a grid search for the best F1 on validation cubes with truth tables (as
carefully as the pipeline's thresholds are tuned); :meth:`predict` returns a catalogue with
the columns of :func:`mlsky.alma.finder.finish_catalogue`.

Examples
--------
>>> from mlsky.alma.peers.python import SofiaFinder
>>> finder = SofiaFinder().fit(validation_cubes)       # doctest: +SKIP
>>> catalogue = finder.predict(cube)                   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Sequence

import numpy as np
from astropy.stats import mad_std
from astropy.table import Table
from scipy import ndimage, stats

from mlsky.alma.finder import Cube, as_cube, finish_catalogue, integrated_image
from mlsky.alma.metrics import beam_fwhm_of, evaluate
from mlsky.alma.sim.sky import FWHM_PER_SIGMA

FULL_3D = np.ones((3, 3, 3), bool)


def _shape_from_moments(image: np.ndarray, mask: np.ndarray, beam_fwhm: float) -> tuple[float, float, float, float, float]:
    """Centroid, FWHMs (beam deconvolved) and PA from the second moments of a 2-D segment."""
    w = np.where(mask, np.clip(image, 0, None), 0.0)
    if w.sum() <= 0:
        w = mask.astype(float)
    yy, xx = np.indices(image.shape)
    total = w.sum()
    cx, cy = (w * xx).sum() / total, (w * yy).sum() / total
    cxx = (w * (xx - cx) ** 2).sum() / total
    cyy = (w * (yy - cy) ** 2).sum() / total
    cxy = (w * (xx - cx) * (yy - cy)).sum() / total
    evals, evecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    beam_var = (beam_fwhm / FWHM_PER_SIGMA) ** 2
    major, minor = (FWHM_PER_SIGMA * np.sqrt(max(v - beam_var, 0.25)) for v in evals[::-1])
    pa = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])) % 180.0
    return float(cx), float(cy), float(major), float(minor), float(pa)


def catalogue_from_labels(cube: Cube, labels: np.ndarray, keep: Sequence[int] | None = None,
                          memo: dict | None = None) -> Table:
    """Catalogue of labelled 3-D segments: moments for position and shape, the segment's box,
    and the flux as the peak of the segment's spatially integrated spectrum (the truth's
    definition: integrated flux density at the line peak).

    ``memo`` (one dict per ``labels`` array) keeps each segment's row between calls, for grid
    searches that keep different subsets of the same segments.
    """
    memo = {} if memo is None else memo
    if "objects" not in memo:
        memo["objects"] = ndimage.find_objects(labels)
    rows = []
    for k, sl in enumerate(memo["objects"], start=1):
        if sl is None or (keep is not None and k not in keep):
            continue
        if k not in memo:
            memo[k] = _segment_row(cube, labels, k, sl)
        rows.append(memo[k])
    table = finish_catalogue(rows, cube)
    # A classical finder reports the extent of its mask, not a box from fitted shapes.
    for i, r in enumerate(rows):
        for name, value in zip(("x0", "x1", "y0", "y1", "z0", "z1"), r["box"]):
            table[name][i] = value
    return table


def _segment_row(cube: Cube, labels: np.ndarray, k: int, sl: tuple[slice, ...]) -> dict:
    snr = cube.data[sl] / cube.noise[sl[0], None, None]
    mask = labels[sl] == k
    footprint = mask.any(axis=0)
    image = np.where(mask, snr, 0.0).sum(axis=0)
    cx, cy, major, minor, pa = _shape_from_moments(image, footprint, beam_fwhm_of(cube))
    spectrum = np.where(footprint, cube.data[:, sl[1], sl[2]], 0.0).sum(axis=(1, 2)) / cube.beam_area_pix
    chans = np.arange(sl[0].start, sl[0].stop)
    wz = np.clip(snr.sum(axis=(1, 2), where=mask), 0, None) + 1e-9
    return dict(
        x=cx + sl[2].start, y=cy + sl[1].start, z=float((chans * wz).sum() / wz.sum()), fwhm_x=major, fwhm_y=minor,
        pa_deg=pa, fwhm_z=max(mask.any(axis=(1, 2)).sum(), 1) * FWHM_PER_SIGMA / 6.0,
        flux=float(spectrum[sl[0]].max()),
        box=(sl[2].start, sl[2].stop, sl[1].start, sl[1].stop, sl[0].start, sl[0].stop),
    )


class _Finder:
    """Grid-search tuning shared by the peers; subclasses define ``param_grid`` and ``_find``."""

    param_grid: dict[str, Sequence]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_grid}

    def set_params(self, **params) -> "_Finder":
        for name, value in params.items():
            if name not in self.param_grid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}")
            setattr(self, name, value)
        return self

    def fit(self, cubes: Sequence, param_grid: dict[str, Sequence] | None = None) -> "_Finder":
        """Choose the parameters with the best F1 (then SDC2 score) on cubes with truth tables,
        matched strictly (:func:`mlsky.alma.metrics.evaluate`'s default).

        Sets ``best_params_``, ``best_score_`` (the scores of :func:`mlsky.alma.metrics.evaluate`)
        and ``scan_`` (a Table with every combination's scores; sequence-valued parameters,
        such as kernel lists, written as text).
        """
        grid = param_grid or self.param_grid
        prepared = [self._prepare(as_cube(c)) for c in cubes]
        truths = [c.truth for c in cubes]
        rows = []
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values))
            self.set_params(**params)
            scores, _ = evaluate(truths, [self._find(p) for p in prepared])
            rows.append({**params, **scores})
        best = max(rows, key=lambda r: (r["f1"], r["sdc2_score"]))
        self.best_params_ = {k: best[k] for k in grid}
        self.best_score_ = {k: best[k] for k in best if k not in grid}
        self.scan_ = Table(rows=[{k: str(v) if isinstance(v, tuple) else v for k, v in r.items()} for r in rows])
        self.set_params(**self.best_params_)
        return self

    def predict(self, cube: Any) -> Table:
        """The catalogue of a cube (path, HDU, SimulatedCube or Cube)."""
        return self._find(self._prepare(cube if isinstance(cube, Cube) else as_cube(cube)))


class BlobcatFinder(_Finder):
    """Blobcat-like flood fill in 3-D: seeds above ``seed_sigma`` grown to ``flood_sigma``.

    Parameters
    ----------
    seed_sigma
        Detection threshold of a blob's brightest voxel, in units of the channel noise.
    flood_sigma
        Threshold down to which a blob is flooded (blobcat's default is 2.6).
    min_voxels
        Smallest blob kept.

    Examples
    --------
    >>> finder = BlobcatFinder(seed_sigma=5.0)
    >>> finder.get_params()["seed_sigma"]
    5.0
    """

    param_grid = {"seed_sigma": (4.0, 4.5, 5.0, 5.5, 6.0, 7.0), "flood_sigma": (2.0, 2.6, 3.0),
                  "min_voxels": (1, 10, 30, 60)}

    def __init__(self, seed_sigma: float = 5.0, flood_sigma: float = 2.6, min_voxels: int = 10):
        self.seed_sigma = seed_sigma
        self.flood_sigma = flood_sigma
        self.min_voxels = min_voxels

    def _prepare(self, cube: Cube) -> tuple[Cube, np.ndarray, dict]:
        # The last item caches the flood-filled blobs per flood level across a grid search.
        return cube, cube.snr, {}

    def _find(self, prepared) -> Table:
        cube, snr, cache = prepared
        if self.flood_sigma not in cache:
            labels, n = ndimage.label(snr > self.flood_sigma, structure=FULL_3D)
            index = np.arange(1, n + 1)
            cache[self.flood_sigma] = (labels, index, ndimage.maximum(snr, labels, index) if n else np.zeros(0),
                                       np.bincount(labels.ravel(), minlength=n + 1)[1:], {})
        labels, index, peaks, sizes, memo = cache[self.flood_sigma]
        keep = index[(peaks > self.seed_sigma) & (sizes >= self.min_voxels)]
        return catalogue_from_labels(cube, labels, keep=set(keep.tolist()), memo=memo)


class SofiaFinder(_Finder):
    """SoFiA-like smooth-and-clip over several kernels with a reliability cut.

    Parameters
    ----------
    threshold
        Clip level of each smoothed cube, in units of its own (robust) noise.
    min_voxels
        Smallest source kept (the linker's minimum size).
    reliability
        Smallest reliability kept (0 turns the cut off). The reliability of a source is
        ``(P - N) / P`` with ``P`` and ``N`` the densities of positive and negative
        detections around it in the (log peak, log sum, log mean SNR) space, as in SoFiA.
    spatial_fwhm, spectral_width
        The kernels: Gaussian FWHMs in pixels (0 = none) and boxcar widths in channels
        (0 = none); every pair is used.

    Examples
    --------
    >>> SofiaFinder(threshold=4.0).threshold
    4.0
    """

    param_grid = {"threshold": (3.5, 4.0, 4.5, 5.0, 5.5, 6.0), "min_voxels": (5, 15, 40, 80),
                  "reliability": (0.0, 0.5, 0.9)}

    def __init__(self, threshold: float = 4.0, min_voxels: int = 15, reliability: float = 0.9,
                 spatial_fwhm: Sequence[float] = (0, 4, 8), spectral_width: Sequence[int] = (0, 3, 7)):
        self.threshold = threshold
        self.min_voxels = min_voxels
        self.reliability = reliability
        self.spatial_fwhm = tuple(spatial_fwhm)
        self.spectral_width = tuple(spectral_width)

    def _prepare(self, cube: Cube):
        """The largest (and smallest) normalised smoothed value of each voxel over the kernels,
        so that one comparison gives the joined mask at any threshold."""
        snr = cube.snr
        hi = np.full(snr.shape, -np.inf, np.float32)
        lo = np.full(snr.shape, np.inf, np.float32)
        for fwhm, width in itertools.product(self.spatial_fwhm, self.spectral_width):
            smooth = snr
            if fwhm:
                smooth = ndimage.gaussian_filter(smooth, (0, fwhm / FWHM_PER_SIGMA, fwhm / FWHM_PER_SIGMA))
            if width:
                smooth = ndimage.uniform_filter1d(smooth, width, axis=0)
            # SoFiA's noise statistic is the MAD about zero, not about the median.
            smooth = smooth / (1.4826 * np.median(np.abs(smooth)))
            np.maximum(hi, smooth, out=hi)
            np.minimum(lo, smooth, out=lo)
        # The last item caches the labelled masks per threshold across a grid search.
        return cube, snr, hi, lo, {}

    @staticmethod
    def _measure(snr: np.ndarray, labels: np.ndarray, index: np.ndarray, sign: float) -> np.ndarray:
        values = sign * snr
        peak = ndimage.maximum(values, labels, index)
        total = ndimage.sum_labels(values, labels, index)
        size = ndimage.sum_labels(np.ones_like(values), labels, index)
        params = np.column_stack([peak, total, total / size])
        return np.log10(np.clip(params, 1e-3, None))

    def _find(self, prepared) -> Table:
        cube, snr, hi, lo, cache = prepared
        if self.threshold not in cache:
            pos, n_pos = ndimage.label(hi > self.threshold, structure=FULL_3D)
            neg, n_neg = ndimage.label(lo < -self.threshold, structure=FULL_3D)
            cache[self.threshold] = (pos, np.bincount(pos.ravel(), minlength=n_pos + 1)[1:],
                                     neg, np.bincount(neg.ravel(), minlength=n_neg + 1)[1:], {})
        pos, sizes, neg, nsizes, memo = cache[self.threshold]
        keep = np.arange(1, len(sizes) + 1)[sizes >= self.min_voxels]
        if self.reliability > 0 and len(keep):
            if "params" not in memo:
                memo["params"] = (self._measure(snr, pos, np.arange(1, len(sizes) + 1), 1.0),
                                  self._measure(snr, neg, np.arange(1, len(nsizes) + 1), -1.0))
            pos_params, neg_params = memo["params"]
            negatives = neg_params[nsizes >= self.min_voxels]
            keep = keep[reliability(pos_params[keep - 1], negatives) >= self.reliability]
        return catalogue_from_labels(cube, pos, keep=set(keep.tolist()), memo=memo)


def reliability(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """SoFiA's reliability ``(P - N) / P`` of each positive detection, clipped to [0, 1].

    ``P`` and ``N`` are Gaussian kernel densities of the positive and negative detections in a
    parameter space (rows: detections). With fewer negatives than dimensions + 1 there is no
    evidence of false detections and every reliability is 1.
    """
    n_dim = positive.shape[1]
    if len(negative) <= n_dim or len(positive) <= n_dim:
        return np.ones(len(positive))
    try:
        # Same kernel for both densities (the negatives' covariance), as SoFiA does.
        kde_n = stats.gaussian_kde(negative.T)
        kde_p = stats.gaussian_kde(positive.T)
        kde_p.set_bandwidth(kde_n.factor * np.sqrt(np.diag(kde_n.covariance) / np.diag(kde_p.covariance)).mean())
    except np.linalg.LinAlgError:
        return np.ones(len(positive))
    p = kde_p(positive.T) * len(positive)
    n = kde_n(positive.T) * len(negative)
    return np.clip((p - n) / np.maximum(p, 1e-300), 0, 1)


class PhotutilsFinder(_Finder):
    """Segmentation of the frequency-integrated image with photutils, then spectral extent.

    Parameters
    ----------
    nsigma
        Detection threshold on the integrated image (unit noise).
    npixels
        Smallest segment, in pixels.
    line_sigma
        Channels of a segment's (3-channel smoothed, standardised) spectrum above this form its
        emission range, grown from the brightest channel.
    deblend
        Run photutils' multi-threshold deblending.

    Examples
    --------
    >>> PhotutilsFinder(nsigma=3.0).npixels
    5
    """

    param_grid = {"nsigma": (2.0, 2.5, 3.0, 3.5, 4.0, 5.0), "npixels": (3, 5, 10, 20), "line_sigma": (1.0, 2.0)}

    def __init__(self, nsigma: float = 3.0, npixels: int = 5, line_sigma: float = 1.5, deblend: bool = True):
        self.nsigma = nsigma
        self.npixels = npixels
        self.line_sigma = line_sigma
        self.deblend = deblend

    def _prepare(self, cube: Cube):
        # The last item caches the segmentation per (nsigma, npixels) across a grid search.
        return cube, integrated_image(cube), {}

    def _segment(self, image: np.ndarray) -> np.ndarray | None:
        from photutils.segmentation import deblend_sources, detect_sources
        from photutils.utils.exceptions import NoDetectionsWarning

        with warnings.catch_warnings():
            # An empty image is a valid answer here, not a warning.
            warnings.simplefilter("ignore", NoDetectionsWarning)
            segments = detect_sources(image, self.nsigma, n_pixels=self.npixels)
        if segments is None:
            return None
        if self.deblend and segments.n_labels:
            segments = deblend_sources(image, segments, n_pixels=self.npixels, progress_bar=False)
        return segments.data

    def _find(self, prepared) -> Table:

        cube, image, cache = prepared
        key = (self.nsigma, self.npixels, self.deblend)
        if key not in cache:
            cache[key] = self._segment(np.where(cube.blank, 0.0, image))
        labels2d = cache[key]
        if labels2d is None:
            return finish_catalogue([], cube)
        labels = np.zeros(cube.data.shape, np.int32)
        snr = cube.snr
        for k, sl in enumerate(ndimage.find_objects(labels2d), start=1):
            if sl is None:
                continue
            footprint = labels2d[sl] == k
            spec = snr[:, sl[0], sl[1]].sum(axis=(1, 2), where=footprint[None])
            spec = ndimage.uniform_filter1d(spec, 3)
            spec = (spec - np.median(spec)) / max(mad_std(spec), 1e-9)
            peak = int(np.argmax(spec))
            on, _ = ndimage.label(spec > min(self.line_sigma, spec[peak]))
            chans = on == on[peak]
            yy, xx = np.nonzero(footprint)
            labels[np.flatnonzero(chans)[:, None], (yy + sl[0].start)[None], (xx + sl[1].start)[None]] = k
        return catalogue_from_labels(cube, labels)
