"""Finding and characterising sources in ALMA cubes with the deep-learning pipeline.

The pipeline of Delli Veneri et al. (2023), in three steps:

1. **Blobs Finder** turns the frequency-integrated dirty image into a source probability map;
   thresholding it and labelling connected regions gives 2-D boxes.
2. **Deep GRU** reads the dirty spectrum inside each box and marks the channels with emission;
   each emission range is a detection (z, its extent), and a box with two ranges is flagged
   for deblending. Boxes with no emission are dropped as false positives.
3. The **ResNet battery** regresses FWHMx, FWHMy, position angle and flux from a cutout
   integrated over the emission range.

The finder that ships with mlsky keeps the candidates that the noise alone would not give, as
judged from the networks' candidates on the negated cube (:mod:`~mlsky.alma.finder.reliability`),
and measures each on the cube instead of with the battery (:mod:`~mlsky.alma.finder.measure`),
after splitting close pairs (:mod:`~mlsky.alma.finder.deblend`). Given the cube's dirty beam
(``psf``), it also drops the candidates that a brighter source's sidelobes explain
(:mod:`~mlsky.alma.finder.sidelobes`), and fits each source through that beam, which removes the
deconvolution's bias from sizes and fluxes.

Any cube size works: the integrated image is zero-padded or tiled to the network's input, and
a cube with another pixel scale or channel width than the training cubes is resampled to
them first (both read from the WCS). NaN-blanked voxels count as empty sky.

Examples
--------
>>> from mlsky.alma import detect
>>> catalogue = detect("cube.fits", weights="weights/")   # doctest: +SKIP
>>> catalogue["ra", "dec", "freq", "flux", "deblend"]     # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.table import Table
from scipy import ndimage

from mlsky.alma.finder.catalogue import finish_catalogue
from mlsky.alma.finder.cube import Cube, as_cube, noise_autocorrelation, resample
from mlsky.alma.finder.deblend import beam_major_pix, distinct, split_blend, subtract
from mlsky.alma.finder.inputs import (
    battery_input,
    box_spectrum,
    emission_ranges,
    fwhm_z_from_range,
    integrated_image,
    matched_filter_images,
    matched_filter_pair,
    probability_map,
    probability_map_fcn,
    tiles,
)
from mlsky.alma.finder.measure import measure_source
from mlsky.alma.finder.reliability import expected_false, negated, resolution_elements, significance
from mlsky.alma.finder.sidelobes import SIDELOBE_SHARE, sidelobe_share
from mlsky.alma.io import read_psf
from mlsky.alma.finder.models.checkpoint import load_checkpoint
from mlsky.alma.sim.sky import FWHM_PER_SIGMA
from mlsky.config import get_device, get_scale
from mlsky.data import cache_dir

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT = 1


def default_weights_dir() -> Path:
    """Where ``mlsky alma train`` writes without ``--out``: the cache, one folder per scale."""
    return cache_dir() / "alma_weights" / get_scale()


# --- the pipeline ----------------------------------------------------------------------


@dataclass
class PipelineConfig:
    """What the three networks were trained on, and the thresholds chosen on validation cubes."""

    input_size: int
    cutout: int
    pixel_scale_arcsec: float
    channel_width_hz: float
    blob_threshold: float = 0.5
    gru_threshold: float = 0.5
    min_blob_pixels: int = 2
    min_channels: int = 1
    window: int = 0
    scale: str = "laptop"
    blobs_model: str = "blobs_finder"
    filter_widths: list[int] = field(default_factory=list)
    #: Channels of the training cubes (0: unknown). A fully convolutional finder reads a longer
    #: cube in windows of this many channels: its input is a maximum over channels, and the
    #: maximum of noise over more channels than it was trained on looks like sources to it.
    channels: int = 0
    format: int = PIPELINE_FORMAT

    def write(self, folder: Path) -> None:
        tmp = folder / f".{PIPELINE_FILE}.tmp"
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, folder / PIPELINE_FILE)

    @classmethod
    def read(cls, folder: Path) -> "PipelineConfig":
        path = Path(folder) / PIPELINE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no trained ALMA pipeline in {folder} ({PIPELINE_FILE} missing); "
                "train one with `mlsky alma train --out DIR`"
            )
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(raw, dict) or raw.get("format") != PIPELINE_FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"{path} has format {found}, this mlsky reads {PIPELINE_FORMAT}")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if set(raw) - known or required - set(raw):
            raise ValueError(f"{path}: unknown key(s) {sorted(set(raw) - known)}, missing key(s) "
                             f"{sorted(required - set(raw))}; it was not written by this mlsky")
        return cls(**raw)


#: The ways a detection can be characterised (see :class:`AlmaSourceFinder`).
MEASURES = ("fit", "battery")
#: The thresholds :meth:`AlmaSourceFinder.fit` tries by default.
THRESHOLD_GRID = {
    "blob_threshold": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "gru_threshold": (0.2, 0.3, 0.5, 0.7),
}
#: The default ``false_alarms`` of :class:`AlmaSourceFinder`, chosen on simulated development
#: cubes (:mod:`~mlsky.alma.finder.reliability`).
FALSE_ALARMS = 0.02
#: The ResNets of the battery: name -> outputs (the angle is regressed as cos/sin of 2 pa).
BATTERY = {"fwhm_x": 1, "fwhm_y": 1, "pa": 2, "flux": 1}


class AlmaSourceFinder:
    """The three-step deep-learning source finder with its trained networks.

    Parameters
    ----------
    weights
        Folder written by :func:`mlsky.alma.finder.train.train_pipeline` (``mlsky alma train``).
    device
        Torch device; default :func:`mlsky.config.get_device`.
    measure
        How a detection is characterised: ``"fit"`` (default) measures position, shape, line
        and flux on the cube (:func:`~mlsky.alma.finder.measure.measure_source`);
        ``"battery"`` is the paper's ResNet battery, with the detector's position and line.
    deblend
        With ``measure="fit"``, split a detection that is a pair of sources closer than a beam
        (:func:`~mlsky.alma.finder.deblend.split_blend`) into two, each measured on the cube
        with the other's fitted model taken out, and flagged ``deblend``.
    false_alarms
        Keep a candidate when the cube should hold at most this many noise detections as
        significant as it, as counted by the same networks on the negated cube
        (:func:`~mlsky.alma.finder.reliability.expected_false`); ``None`` keeps every candidate,
        as the paper's pipeline does. The catalogue gives each detection's ``snr`` and
        ``n_false``.

    Attributes
    ----------
    config_ : PipelineConfig
    blobs_finder_, deep_gru_ : torch.nn.Module
    battery_ : dict of torch.nn.Module
    target_stats_ : dict
        Mean and std used to standardise each ResNet target.

    Examples
    --------
    >>> finder = AlmaSourceFinder("weights/").load()       # doctest: +SKIP
    >>> catalogue = finder.predict("cube.fits")            # doctest: +SKIP
    """

    def __init__(self, weights: str | os.PathLike, device=None, measure: str = "fit", deblend: bool = True,
                 false_alarms: float | None = FALSE_ALARMS):
        self.weights = weights
        self.device = device
        self.measure = measure
        self.deblend = deblend
        self.false_alarms = false_alarms

    def load(self) -> "AlmaSourceFinder":
        """Read the configuration and the checkpoints; checks every model's name and version."""
        if self.measure not in MEASURES:
            raise ValueError(f"measure={self.measure!r}; use one of {', '.join(MEASURES)}")
        if self.false_alarms is not None and not (np.isfinite(self.false_alarms) and self.false_alarms > 0):
            raise ValueError(f"false_alarms={self.false_alarms!r}; give a positive number, or None to keep every candidate")
        folder = Path(self.weights)
        self.device_ = self.device or get_device()
        self.config_ = PipelineConfig.read(folder)
        self.blobs_finder_, _ = load_checkpoint(folder / "blobs_finder.pt", self.config_.blobs_model, self.device_)
        self.deep_gru_, _ = load_checkpoint(folder / "deep_gru.pt", "deep_gru", self.device_)
        self.battery_, self.target_stats_ = {}, {}
        for name in BATTERY if self.measure == "battery" else ():
            self.battery_[name], extra = load_checkpoint(folder / f"resnet_{name}.pt", "resnet18", self.device_)
            self.target_stats_[name] = extra["target_stats"]
        return self

    def probability(self, cube: Cube, window: int | None = None) -> np.ndarray:
        """Blobs Finder's source probability map of a cube (zero on blanked pixels).

        A fully convolutional finder (``filter_widths`` in the configuration) reads the
        matched-filtered images of the cube (:func:`~mlsky.alma.finder.inputs.matched_filter_images`)
        in one pass, or, for a cube longer than its training cubes (``channels`` in the
        configuration), of each window of that many channels (overlapping by a quarter), keeping
        the largest probability; ``window`` does not apply. For the paper's finder, with ``window`` (default: the configuration's) > 0, Blobs Finder also reads images
        integrated over windows of that many channels (overlapping by a quarter), and the map keeps the
        largest probability: a narrow line summed over the whole band is diluted by its empty
        channels, and a window gives it back its contrast. ``window=0`` is the paper's
        full-band integration only.
        """
        if self.config_.filter_widths:
            return self._fcn_maps(cube, with_negated=False)[0]
        window = self.config_.window if window is None else window
        n_chan = cube.data.shape[0]
        bands = [slice(None)]
        if 0 < window < n_chan:
            bands += [slice(z, z + window) for z in tiles(n_chan, window)]
        images = [integrated_image(cube, band) for band in bands]
        prob = np.max([probability_map(self.blobs_finder_, image, self.device_) for image in images], axis=0)
        prob[cube.blank] = 0.0
        return prob

    def boxes(self, prob: np.ndarray, threshold: float | None = None) -> list[tuple[int, int, int, int, float, float]]:
        """Connected regions of the map above the threshold: ``(x0, x1, y0, y1, x, y)``, the
        centre weighted by the probability."""
        threshold = self.config_.blob_threshold if threshold is None else threshold
        labels, _ = ndimage.label(prob > threshold)
        found = []
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[sl] == k
            if mask.sum() < self.config_.min_blob_pixels:
                continue
            w = prob[sl] * mask
            yy, xx = np.mgrid[sl]
            cy, cx = float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum())
            found.append((sl[1].start, sl[1].stop, sl[0].start, sl[0].stop, cx, cy))
        return found

    def focus(self, cube: Cube, box) -> tuple[np.ndarray, np.ndarray]:
        """Deep GRU on a box's spectrum: the standardised spectrum and each channel's
        probability of emission."""
        import torch

        spec = box_spectrum(cube, *box[:4])
        with torch.no_grad():
            prob = self.deep_gru_(torch.from_numpy(spec[None]).to(self.device_)).cpu().numpy()[0]
        return spec, prob

    def characterise(self, cube: Cube, detections: list[tuple[float, float, int, int]],
                     psf: np.ndarray | None = None, noise_acf: np.ndarray | None = None) -> list[dict[str, float]]:
        """Measure detections at ``(x, y)`` with emission in channels ``[z0, z1)``: fitted on the
        cube (``measure="fit"``; through the dirty beam ``psf`` when given; ``noise_acf`` as for
        :func:`~mlsky.alma.finder.measure.measure_source`), or the ResNet battery on cutouts
        integrated over the range."""
        import torch

        if not detections:
            return []
        if self.measure == "fit":
            return [measure_source(cube, *d, psf=psf, noise_acf=noise_acf) for d in detections]
        batch = torch.from_numpy(np.stack([battery_input(cube, *d, self.config_.cutout) for d in detections])[:, None])
        out = {}
        with torch.no_grad():
            for name, net in self.battery_.items():
                mean, std = (np.asarray(v) for v in self.target_stats_[name])
                out[name] = net(batch.to(self.device_)).cpu().numpy() * std + mean
        params = []
        for i, (_, _, z0, z1) in enumerate(detections):
            ref = float(np.median(cube.noise[z0:z1]))
            params.append({
                "fwhm_x": float(out["fwhm_x"][i, 0]),
                "fwhm_y": float(out["fwhm_y"][i, 0]),
                "pa_deg": float(np.degrees(0.5 * np.arctan2(out["pa"][i, 1], out["pa"][i, 0]))),
                "flux": float(10 ** out["flux"][i, 0] * ref),
            })
        return params

    def split(self, cube: Cube, rows: list[dict]) -> list[tuple[dict, Cube]]:
        """Each detection with the cube to measure it on: a close pair becomes two detections,
        each on the cube without the other's fitted model."""
        out = []
        n_chan = cube.data.shape[0]
        for row in rows:
            parts = split_blend(cube, row["x"], row["y"], row["z0"], row["z1"])
            if len(parts) == 1:
                out.append((row, cube))
                continue
            for part, other in zip(parts, parts[::-1]):
                z0, z1 = part.channels(n_chan)
                out.append((dict(row, x=part.x, y=part.y, z=part.z, z0=z0, z1=z1, fwhm_z=part.sigma_z * FWHM_PER_SIGMA,
                                 deblend=True), subtract(cube, other)))
        return out

    def detections(self, box, spec: np.ndarray, gru_prob: np.ndarray, threshold: float | None = None) -> list[dict]:
        """One detection per emission range of a box: position, channel centre, range, deblend flag."""
        threshold = self.config_.gru_threshold if threshold is None else threshold
        ranges = emission_ranges(gru_prob, threshold, self.config_.min_channels)
        rows = []
        for z0, z1 in ranges:
            weights = np.clip(spec[z0:z1], 0, None) + 1e-6
            z = float((np.arange(z0, z1) * weights).sum() / weights.sum())
            rows.append(dict(x=box[4], y=box[5], z=z, z0=z0, z1=z1, fwhm_z=fwhm_z_from_range(z0, z1),
                             deblend=len(ranges) > 1))
        return rows

    def candidates(self, cube: Cube, prob: np.ndarray, blob_threshold: float | None = None,
                   gru_threshold: float | None = None, memo: dict | None = None) -> list[dict]:
        """The detections of Blobs Finder and Deep GRU, before any measurement, each with its
        :func:`~mlsky.alma.finder.reliability.significance` ``snr``."""
        memo = {} if memo is None else memo
        rows = []
        for box in self.boxes(prob, blob_threshold):
            if box not in memo:
                memo[box] = self.focus(cube, box)
            for row in self.detections(box, *memo[box], threshold=gru_threshold):
                key = ("snr", row["x"], row["y"], row["z0"], row["z1"])
                if key not in memo:
                    memo[key] = significance(cube, row["x"], row["y"], row["z0"], row["z1"])
                rows.append({**row, "snr": memo[key]})
        return rows

    def catalogue(self, cube: Cube, prob: np.ndarray, blob_threshold: float | None = None,
                  gru_threshold: float | None = None, memo: dict | None = None,
                  negated_prob: np.ndarray | None = None, psf: np.ndarray | None = None) -> list[dict]:
        """The measured detections of a (resampled) cube from its probability map, at the given
        thresholds (default: the configuration's).

        With ``false_alarms``, ``negated_prob`` is the map of the negated cube; each candidate
        gets ``n_false``, the noise detections the cube should hold at its significance, and
        those with more than ``false_alarms`` are dropped before they are measured.

        With ``psf`` (the dirty beam on the cube's grid, peak 1 at ``shape // 2``), a candidate
        that a brighter one's sidelobes explain is dropped too (:mod:`~mlsky.alma.finder.sidelobes`),
        and the sources are measured through it (:func:`~mlsky.alma.finder.measure.measure_source`).
        Measured detections that repeat a more significant one are dropped
        (:func:`~mlsky.alma.finder.deblend.distinct`).

        ``memo`` (one dict per cube and map) keeps each box's Deep GRU output and each
        detection's measurement between calls, so that a threshold scan runs every network
        and fit once per box or detection.
        """
        memo = {} if memo is None else memo
        rows = self.candidates(cube, prob, blob_threshold, gru_threshold, memo)
        if self.false_alarms is not None:
            if negated_prob is None:
                raise ValueError("false_alarms needs the negated cube's probability map (negated_prob)")
            if "negated" not in memo:
                memo["negated"] = (negated(cube), {})
            negated_cube, negated_memo = memo["negated"]
            noise = self.candidates(negated_cube, negated_prob, blob_threshold, gru_threshold, negated_memo)
            n_false = (expected_false([r["snr"] for r in rows], [r["snr"] for r in noise], resolution_elements(cube))
                       if rows else [])
            rows = [{**r, "n_false": float(n)} for r, n in zip(rows, n_false) if n <= self.false_alarms]
        if psf is not None:
            shares = sidelobe_share(rows, psf, cube.beam_fwhm_pix)
            rows = [r for r, share in zip(rows, shares) if share < SIDELOBE_SHARE]
        out = []
        if rows and "noise_acf" not in memo:
            memo["noise_acf"] = noise_autocorrelation(cube)  # once per cube, for every source's errors
        for row in rows:
            key = (row["x"], row["y"], row["z0"], row["z1"], row["deblend"])
            if key not in memo:
                memo[key] = self._measured(cube, row, psf, memo["noise_acf"])
            # n_false depends on the thresholds: the memo's rows keep the first call's.
            out += [{**m, **{k: row[k] for k in ("snr", "n_false") if k in row}} for m in memo[key]]
        return distinct(out, beam_major_pix(cube))

    def _measured(self, cube: Cube, row: dict, psf: np.ndarray | None, noise_acf: np.ndarray) -> list[dict]:
        """A detection measured (split first when deblending): one row, or two for a pair."""
        if self.deblend and self.measure == "fit":
            return [{**r, **measure_source(c, r["x"], r["y"], r["z0"], r["z1"], psf=psf, noise_acf=noise_acf)}
                    for r, c in self.split(cube, [row])]
        return [{**row, **self.characterise(cube, [(row["x"], row["y"], row["z0"], row["z1"])], psf, noise_acf)[0]}]

    def fit(self, cubes: Sequence, param_grid: dict[str, Sequence] | None = None) -> "AlmaSourceFinder":
        """Choose the thresholds with the best F1 (then mean IoU) on cubes with truth tables,
        matched strictly (:func:`mlsky.alma.metrics.evaluate`'s default), as the peers'
        ``fit`` chooses theirs.

        ``param_grid`` maps ``blob_threshold``, ``gru_threshold`` and ``window`` (the paper's
        finder only) to the values to try; default :data:`THRESHOLD_GRID`, at the
        configuration's window. The networks run once per cube and window; the chosen values
        replace the configuration's in memory (the weights folder is not written).

        Sets ``best_params_``, ``best_score_`` (the scores of :func:`~mlsky.alma.metrics.evaluate`)
        and ``scan_`` (a Table with every combination's scores).
        """
        from mlsky.alma.metrics import evaluate

        if not hasattr(self, "config_"):
            self.load()
        grid = {**THRESHOLD_GRID, "window": (self.config_.window,), **(param_grid or {})}
        unknown = set(grid) - {"blob_threshold", "gru_threshold", "window"}
        if unknown:
            raise ValueError(f"param_grid: unknown parameter(s) {sorted(unknown)}; "
                             "use blob_threshold, gru_threshold, window")
        originals = [c if isinstance(c, Cube) else as_cube(c) for c in cubes]
        truths = [c.truth for c in cubes]
        works = [resample(c, self.config_.pixel_scale_arcsec, self.config_.channel_width_hz) for c in originals]
        scan = []
        for window in grid["window"]:
            maps = [self.maps(work, window) for work, _ in works]
            memos = [{} for _ in works]
            for bt, gt in itertools.product(grid["blob_threshold"], grid["gru_threshold"]):
                catalogues = [_table(self.catalogue(work, prob, bt, gt, memo, negated_prob), original, factors,
                                     self.false_alarms is not None)
                              for (work, factors), (prob, negated_prob), memo, original
                              in zip(works, maps, memos, originals)]
                scores, _ = evaluate(truths, catalogues)
                scan.append({"window": window, "blob_threshold": bt, "gru_threshold": gt, **scores})
        best = max(scan, key=lambda s: (s["f1"], s["mean_iou"]))
        self.best_params_ = {k: best[k] for k in ("window", "blob_threshold", "gru_threshold")}
        self.best_score_ = {k: v for k, v in best.items() if k not in self.best_params_}
        self.scan_ = Table(rows=scan)
        self.config_ = replace(self.config_, **self.best_params_)
        return self

    def predict(self, cube: Any, psf: Any = None) -> Table:
        """The catalogue of the sources in a cube (path, HDU, SimulatedCube or Cube).

        ``psf``, the cube's dirty beam (a FITS path or a 2-D array on the cube's pixels, peak at
        ``shape // 2``, as CASA's ``tclean`` writes it; default the cube's own
        :attr:`~mlsky.alma.finder.cube.Cube.psf`), lets the finder drop the candidates that
        a brighter source's sidelobes explain (:mod:`~mlsky.alma.finder.sidelobes`), and measure
        each source through it: sizes, angles and fluxes with no deconvolution bias
        (:func:`~mlsky.alma.finder.measure.measure_source`).
        """
        if not hasattr(self, "config_"):
            self.load()
        original = cube if isinstance(cube, Cube) else as_cube(cube)
        work, factors = resample(original, self.config_.pixel_scale_arcsec, self.config_.channel_width_hz)
        beam = work.psf if psf is None else read_psf(psf, factors[1])
        prob, negated_prob = self.maps(work)
        return _table(self.catalogue(work, prob, negated_prob=negated_prob, psf=beam), original, factors,
                      self.false_alarms is not None)

    def maps(self, cube: Cube, window: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The probability maps of the cube and, with ``false_alarms``, of the negated cube.

        A fully convolutional finder reads both from one matched filtering
        (:func:`~mlsky.alma.finder.inputs.matched_filter_pair`), the same maps as
        :meth:`probability` of each sign.
        """
        if self.false_alarms is None:
            return self.probability(cube, window), None
        if self.config_.filter_widths:
            return self._fcn_maps(cube, with_negated=True)
        return self.probability(cube, window), self.probability(negated(cube), window)

    def _fcn_maps(self, cube: Cube, with_negated: bool) -> tuple[np.ndarray, ...]:
        """The fully convolutional finder's map of the cube (and of the negated cube): the largest
        probability over windows of the configuration's ``channels``."""
        span = self.config_.channels
        starts = tiles(cube.data.shape[0], span) if span > 0 else [0]
        widths = self.config_.filter_widths
        per_window = []
        for z in starts:
            part = cube.channels(z, z + span) if span > 0 else cube
            planes = matched_filter_pair(part, widths) if with_negated else (matched_filter_images(part, widths),)
            per_window.append([probability_map_fcn(self.blobs_finder_, p, self.device_) for p in planes])
        maps = tuple(np.max(sign, axis=0) for sign in zip(*per_window))
        for prob in maps:
            prob[cube.blank] = 0.0
        return maps


def _table(rows: list[dict], cube: Cube, factors: tuple[float, float], n_false: bool) -> Table:
    """The catalogue of measured rows, with each detection's significance and, when the finder
    judged it against the negated cube, ``n_false``."""
    table = finish_catalogue(rows, cube, factors)
    columns = {"snr": "significance of the summed, smoothed image (mlsky.alma.finder.reliability)"}
    if n_false:
        columns["n_false"] = "noise detections as significant expected in the cube"
    for name, description in columns.items():
        table[name] = np.array([r[name] for r in rows], float)
        table[name].description = description
    return table


def detect(cube: Any, weights: str | os.PathLike | None = None, device=None,
           false_alarms: float | None = FALSE_ALARMS, psf: Any = None) -> Table:
    """Find and characterise the sources of a dirty cube with the trained pipeline.

    Parameters
    ----------
    cube
        A FITS path, an HDU, a :class:`~mlsky.alma.sim.SimulatedCube`, ``(data, header)``
        or a :class:`Cube`.
    weights
        Folder of trained networks (``mlsky alma train --out DIR``). Default: the weights that
        ship with mlsky (:mod:`mlsky.alma.finder.ship`), checked against their sha256.
    false_alarms
        The most noise detections as significant as a kept one that the cube may hold
        (:class:`AlmaSourceFinder`); ``None`` keeps every candidate of the networks.
    psf
        The cube's dirty beam (FITS path or 2-D array, peak at ``shape // 2``): candidates that a
        brighter source's sidelobes explain are dropped (:mod:`~mlsky.alma.finder.sidelobes`),
        and the sources are fitted through it (:func:`~mlsky.alma.finder.measure.measure_source`).

    Returns
    -------
    astropy.table.Table
        One row per source: pixel position ``x, y, z``, sky position ``ra, dec``, ``freq``,
        3-D box ``x0..z1``, ``fwhm_x, fwhm_y`` (pix and arcsec), ``pa_deg``, ``fwhm_z``
        (channels and kHz), ``flux`` (Jy, at the line peak), ``deblend``, the 1-sigma errors
        ``err_x, err_y, err_z, err_fwhm_x, err_fwhm_y, err_pa_deg, err_fwhm_z, err_flux``
        (:func:`~mlsky.alma.finder.measure.measure_source`; not for the paper's battery), ``snr``
        (the significance) and ``n_false`` (the noise detections as significant that the cube
        should hold, :mod:`~mlsky.alma.finder.reliability`).
    """
    if weights is None:
        from mlsky.data.weights import shipped_weights

        weights = shipped_weights("alma_finder")
    return AlmaSourceFinder(weights, device, false_alarms=false_alarms).load().predict(cube, psf=psf)
