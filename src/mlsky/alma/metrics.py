"""Scoring a catalogue against the truth: strict matching, the paper's IoU, and the SDC2 score.

**Strict matching (the default).** A detection can be matched with a true source when it lies
within ``tolerance_beams`` beam FWHMs of the source on the sky (default 0.6: about 3 px for
the ALMA set-up of the CASA cubes) and within ``max(2, 2 sigma_z)`` channels of its line
centre. Among the admissible pairs the assignment of least summed distance (in units of the
two tolerances) is taken (Hungarian algorithm), so each source and each detection is used once.
Matched pairs are true positives (TP), unmatched detections false positives (FP), unmatched
sources false negatives (FN).

**Box matching** (``criterion="box"``, Delli Veneri et al. 2023, Table 4): a pair is admissible
when the centre of either lies inside the other's 3-D bounding box, and the assignment
maximises the summed 3-D IoU. It lets a detection several pixels off still count, hence no
longer the default; the mean IoU of the matched pairs stays as a second figure either way.

**SKA Science Data Challenge 2 score** (:func:`sdc2_scores`): each match earns the mean of
its parameter sub-scores (each ``min(1, threshold / error)``), each false detection costs 1.

Catalogues and truth tables share the column names of :mod:`mlsky.alma.sim.simulate`: ``x, y, z``
(0-based pixels / channels), the box ``x0, x1, y0, y1, z0, z1`` (inclusive-exclusive) and,
where estimated, ``fwhm_x, fwhm_y, pa_deg, fwhm_z, flux``. The beam FWHM (pixels) comes from the
``beam_fwhm_pix`` argument or from the truth's ``meta["beam_fwhm_pix"]`` (written by the
simulator and the CASA reader); :func:`beam_fwhm_of` reads it from a FITS header or a cube.

Examples
--------
>>> from astropy.table import Table
>>> truth = Table({"x": [10.0], "y": [10.0], "z": [5.0], "fwhm_z": [4.0], "x0": [8], "x1": [13],
...                "y0": [8], "y1": [13], "z0": [3], "z1": [8]})
>>> found = Table({"x": [10.5], "y": [9.5], "z": [5.0], "x0": [8], "x1": [13], "y0": [7],
...                "y1": [12], "z0": [3], "z1": [8]})
>>> score = detection_scores(truth, found, beam_fwhm_pix=5.0)
>>> score["tp"], score["fp"], score["fn"], round(score["mean_iou"], 3)
(1, 0, 0, 0.667)
>>> detection_scores(truth, found, beam_fwhm_pix=1.0)["tp"]     # 0.7 px > 0.6 beam
0
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from astropy.io import fits
from astropy.stats import gaussian_fwhm_to_sigma, mad_std
from astropy.table import Table, vstack
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from radio_beam import Beam
from scipy.optimize import linear_sum_assignment

from mlsky.alma.sim.sky import canonical_shape

BOX = ("x0", "x1", "y0", "y1", "z0", "z1")
CENTRE = ("x", "y", "z")
#: Default positional tolerance of a match, in beam FWHMs.
TOLERANCE_BEAMS = 0.6
#: Spectral tolerance of a match: this many line sigmas, and at least ``MIN_CHANNELS`` channels.
TOLERANCE_SIGMA_Z = 2.0
MIN_CHANNELS = 2.0
#: W20 of a Gaussian line over its FWHM, sqrt(ln 5 / ln 2).
W20_PER_FWHM = float(np.sqrt(np.log(5) / np.log(2)))
#: SDC2 thresholds (``ska_sdc`` 2.0, ``sdc2_config.ini``): a sub-score is ``min(1, threshold / error)``.
SDC2_THRESHOLDS = {"position": 0.3, "frequency": 0.3, "flux": 0.1, "size": 0.3, "pa": 10.0, "line_width": 0.3}
#: Parameters compared in the residual table, with units (the paper's Table 5).
PARAMETERS = {
    "x": "pix",
    "y": "pix",
    "z": "chan",
    "fwhm_x": "pix",
    "fwhm_y": "pix",
    "fwhm_z": "chan",
    "pa_deg": "deg",
    "flux": "mJy",
}


def beam_fwhm_of(source: Any) -> float:
    """Beam FWHM in pixels (geometric mean of major and minor axes).

    Parameters
    ----------
    source
        A FITS header with ``BMAJ``/``BMIN`` and a celestial WCS (read with
        :class:`radio_beam.Beam`), an object with such a ``header`` (e.g. a
        :class:`~mlsky.alma.sim.simulate.SimulatedCube`), a
        :class:`~mlsky.alma.finder.cube.Cube` (its ``beam_area_pix``), or a truth table with
        ``meta["beam_fwhm_pix"]``.

    Raises
    ------
    ValueError
        If ``source`` carries no beam.
    """
    if isinstance(source, Table):
        if "beam_fwhm_pix" not in source.meta:
            raise ValueError("the truth table has no meta['beam_fwhm_pix']; pass beam_fwhm_pix=")
        return float(source.meta["beam_fwhm_pix"])
    area = getattr(source, "beam_area_pix", None)
    if area is not None and np.isfinite(area):
        return float(np.sqrt(area / (np.pi / (4 * np.log(2)))))
    header = source if isinstance(source, fits.Header) else getattr(source, "header", None)
    if header is None or "BMAJ" not in header or "BMIN" not in header:
        raise ValueError(f"{type(source).__name__} carries no beam (BMAJ/BMIN); pass beam_fwhm_pix=")
    beam = Beam.from_fits_header(header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        pixel_deg = float(np.mean(proj_plane_pixel_scales(WCS(header).celestial)))
    return float(np.sqrt(beam.major.to_value("deg") * beam.minor.to_value("deg")) / pixel_deg)


def _columns(table: Table, names: Sequence[str]) -> np.ndarray:
    if len(table) == 0:
        return np.zeros((0, len(names)))
    missing = [c for c in names if c not in table.colnames]
    if missing:
        raise ValueError(f"catalogue lacks the column(s) {', '.join(missing)}")
    return np.column_stack([np.asarray(table[c], float) for c in names])


def _boxes(table: Table) -> np.ndarray:
    return _columns(table, BOX + CENTRE)[:, :6]


def _centres(table: Table) -> np.ndarray:
    return _columns(table, CENTRE)


def _has_boxes(table: Table) -> bool:
    return all(c in table.colnames for c in BOX)


def sigma_z(truth: Table) -> np.ndarray:
    """Line sigma (channels) of each true source: ``sigma_z`` or ``fwhm_z / 2.3548``."""
    if "sigma_z" in truth.colnames:
        return np.asarray(truth["sigma_z"], float)
    if "fwhm_z" in truth.colnames:
        return np.asarray(truth["fwhm_z"], float) * gaussian_fwhm_to_sigma
    raise ValueError("the truth table needs a line width (sigma_z or fwhm_z) for the spectral tolerance")


def box_iou_3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of 3-D boxes ``[x0, x1, y0, y1, z0, z1]`` (shapes ``(n, 6)``, ``(m, 6)``)."""
    a = np.asarray(a, float).reshape(-1, 6)[:, None, :]
    b = np.asarray(b, float).reshape(-1, 6)[None, :, :]
    inter = np.ones((a.shape[0], b.shape[1]))
    for lo, hi in ((0, 1), (2, 3), (4, 5)):
        inter *= np.clip(np.minimum(a[..., hi], b[..., hi]) - np.maximum(a[..., lo], b[..., lo]), 0, None)
    vol = lambda x: np.prod(x[..., 1::2] - x[..., 0::2], axis=-1)  # noqa: E731
    union = vol(a) + vol(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    p = points[:, None, :]
    return np.all((p >= boxes[None, :, 0::2]) & (p < boxes[None, :, 1::2]), axis=-1)


def match(truth: Table, catalogue: Table, *, beam_fwhm_pix: float | None = None,
          tolerance_beams: float = TOLERANCE_BEAMS, criterion: str = "position") -> Table:
    """Pair detections with true sources, each used at most once.

    Parameters
    ----------
    truth, catalogue
        Tables with ``x, y, z`` (and the truth a line width, ``fwhm_z`` or ``sigma_z``); the
        boxes ``x0 ... z1`` for the IoU and for ``criterion="box"``.
    beam_fwhm_pix
        Beam FWHM in pixels; default ``truth.meta["beam_fwhm_pix"]``.
    tolerance_beams
        Largest sky distance of a match, in beam FWHMs.
    criterion
        ``"position"`` (strict, see the module's notes) or ``"box"`` (the paper's).

    Returns
    -------
    astropy.table.Table
        One row per pair: ``i_true, i_pred``, ``separation`` (pixels, on the sky), ``dz``
        (channels, detection minus truth) and ``iou`` of the boxes (NaN without boxes).
    """
    if criterion not in ("position", "box"):
        raise ValueError(f"criterion must be 'position' or 'box', not {criterion!r}")
    tc, pc = _centres(truth), _centres(catalogue)
    pairs = Table({"i_true": np.zeros(0, int), "i_pred": np.zeros(0, int), "separation": np.zeros(0),
                   "dz": np.zeros(0), "iou": np.zeros(0)})
    if len(tc) == 0 or len(pc) == 0:
        return pairs
    boxes = _has_boxes(truth) and _has_boxes(catalogue)
    iou = box_iou_3d(_boxes(truth), _boxes(catalogue)) if boxes else np.full((len(tc), len(pc)), np.nan)
    separation = np.hypot(tc[:, None, 0] - pc[None, :, 0], tc[:, None, 1] - pc[None, :, 1])
    dz = pc[None, :, 2] - tc[:, None, 2]
    if criterion == "box":
        if not boxes:
            raise ValueError("box matching needs the columns x0, x1, y0, y1, z0, z1 in both tables")
        allowed = _inside(pc, _boxes(truth)).T | _inside(tc, _boxes(catalogue))
        # Allowed pairs with no overlap still beat forbidden ones, hence the small offset.
        gain = np.where(allowed, iou + 1e-6, -1.0)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        keep = gain[rows, cols] > 0
    else:
        beam = beam_fwhm_pix if beam_fwhm_pix is not None else beam_fwhm_of(truth)
        pos_tol = tolerance_beams * float(beam)
        z_tol = np.maximum(MIN_CHANNELS, TOLERANCE_SIGMA_Z * sigma_z(truth))[:, None]
        allowed = (separation <= pos_tol) & (np.abs(dz) <= z_tol)
        # Distance in units of the tolerances; forbidden pairs cost more than any allowed set.
        cost = np.where(allowed, np.hypot(separation / pos_tol, dz / z_tol), 1e6)
        rows, cols = linear_sum_assignment(cost)
        keep = allowed[rows, cols]
    rows, cols = rows[keep], cols[keep]
    pairs = Table({"i_true": rows, "i_pred": cols, "separation": separation[rows, cols],
                   "dz": dz[rows, cols], "iou": iou[rows, cols]})
    return pairs


def detection_scores(truth: Table, catalogue: Table, **match_options) -> dict[str, float]:
    """TP, FP, FN, precision, recall, F1, mean IoU of the TPs and SDC2 score for one cube.

    ``match_options`` go to :func:`match` (``beam_fwhm_pix``, ``tolerance_beams``, ``criterion``).
    """
    scores, _ = evaluate([truth], [catalogue], **match_options)
    return scores


def _scores(n_true: int, n_pred: int, pairs: Table) -> dict[str, float]:
    tp = len(pairs)
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    iou = np.asarray(pairs["iou"], float) if tp else np.zeros(0)
    iou = iou[np.isfinite(iou)]
    sdc2 = float(np.sum(pairs["sdc2"])) - fp if tp else -float(fp)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_iou": float(np.mean(iou)) if len(iou) else 0.0,
        "sdc2_score": sdc2,
        "sdc2_per_source": sdc2 / n_true if n_true else 0.0,
    }


def evaluate(truths: Iterable[Table], catalogues: Iterable[Table], *,
             beam_fwhm_pix: float | Sequence[float] | None = None, tolerance_beams: float = TOLERANCE_BEAMS,
             criterion: str = "position") -> tuple[dict[str, float], Table]:
    """Score a finder over many cubes: pooled TP/FP/FN (as the paper) and the matched pairs.

    Parameters
    ----------
    truths, catalogues
        One truth table and one catalogue per cube.
    beam_fwhm_pix
        Beam FWHM in pixels, one for all cubes or one per cube; default each truth's
        ``meta["beam_fwhm_pix"]``.
    tolerance_beams, criterion
        See :func:`match`.

    Returns
    -------
    scores
        ``tp, fp, fn, precision, recall, f1``, ``mean_iou`` (of the matched pairs'
        boxes), ``sdc2_score`` (see :func:`sdc2_scores`) and ``sdc2_per_source`` (that over
        the number of true sources; 1 is perfect) pooled over all cubes.
    pairs
        One row per TP: ``cube, i_true, i_pred, separation, dz, iou, beam_fwhm_pix``, for every
        parameter of :data:`PARAMETERS` present in both tables ``<name>_true`` and
        ``<name>_pred`` (the ellipse as major axis ``fwhm_x``, minor axis ``fwhm_y`` and the
        major axis's ``pa_deg``, on both sides) (plus ``snr_true`` when the truth has an SNR), the SDC2 sub-scores
        ``sdc2_<name>`` and their mean ``sdc2``; and ``err_<name>_pred`` where the catalogue has
        the parameter's error ``err_<name>`` (:func:`parameter_pulls`).
    """
    truths, catalogues = list(truths), list(catalogues)
    if len(truths) != len(catalogues):
        raise ValueError(f"{len(truths)} truth tables but {len(catalogues)} catalogues")
    beams = list(beam_fwhm_pix) if np.ndim(beam_fwhm_pix) == 1 else [beam_fwhm_pix] * len(truths)
    n_true = n_pred = 0
    pairs = []
    for k, (truth, found, beam) in enumerate(zip(truths, catalogues, beams, strict=True)):
        if beam is None and criterion == "position":
            beam = beam_fwhm_of(truth)
        m = match(truth, found, beam_fwhm_pix=beam, tolerance_beams=tolerance_beams, criterion=criterion)
        n_true += len(truth)
        n_pred += len(found)
        m["cube"] = np.full(len(m), k)
        m["beam_fwhm_pix"] = np.full(len(m), np.nan if beam is None else float(beam))
        for name in [*PARAMETERS, "snr"]:
            if name in truth.colnames:
                m[f"{name}_true"] = np.asarray(truth[name], float)[m["i_true"]]
            if name in found.colnames and name != "snr":
                m[f"{name}_pred"] = np.asarray(found[name], float)[m["i_pred"]]
            if f"err_{name}" in found.colnames:
                m[f"err_{name}_pred"] = np.asarray(found[f"err_{name}"], float)[m["i_pred"]]
        for which in ("true", "pred"):
            _canonical_ellipse(m, which)
        pairs.append(sdc2_scores(m))
    joined = vstack(pairs) if pairs else sdc2_scores(Table({"i_true": np.zeros(0, int), "iou": np.zeros(0)}))
    return _scores(n_true, n_pred, joined), joined


def _canonical_ellipse(pairs: Table, which: str) -> None:
    """Write one side's ``fwhm_x, fwhm_y, pa_deg`` as major axis, minor axis and the major
    axis's angle (:func:`~mlsky.alma.sim.sky.canonical_shape`), so residuals compare like with like."""
    names = [f"fwhm_x_{which}", f"fwhm_y_{which}", f"pa_deg_{which}"]
    if all(n in pairs.colnames for n in names):
        pairs[names[0]], pairs[names[1]], pairs[names[2]] = canonical_shape(*(pairs[n] for n in names))


def _major_axis(pairs: Table, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Major-axis FWHM and its position angle (the catalogue's ``fwhm_x`` need not be the major)."""
    fx, fy = pairs[f"fwhm_x_{which}"], pairs[f"fwhm_y_{which}"]
    pa = pairs[f"pa_deg_{which}"] if f"pa_deg_{which}" in pairs.colnames else np.full(len(fx), np.nan)
    major, _, pa_major = canonical_shape(fx, fy, pa)
    return major, pa_major


def sdc2_scores(pairs: Table, thresholds: dict[str, float] | None = None) -> Table:
    """The SKA Science Data Challenge 2 sub-scores of matched pairs, and their mean ``sdc2``.

    After ``ska_sdc`` 2.0 (``sdc2/utils/create_score.py``): a sub-score is
    ``min(1, threshold / error)`` (thresholds :data:`SDC2_THRESHOLDS`), a match earns their
    mean and the catalogue's score is the sum over matches minus 1 per false detection
    (:func:`evaluate`'s ``sdc2_score``). Errors, with our columns:

    - ``position``: separation / sqrt((2 beam FWHM)^2 + (true major FWHM)^2), as SDC2's
      separation / sqrt(4 beam^2 + HI size^2);
    - ``frequency``: ``|dz|`` / true W20, with W20 = 1.524 FWHM of a Gaussian line;
    - ``flux``: relative error of ``flux``;
    - ``size``: relative error of the major-axis FWHM (SDC2: the HI diameter);
    - ``pa``: the major axis' angle difference in degrees;
    - ``line_width``: relative error of W20, i.e. of ``fwhm_z``.

    What differs from SDC2: matches come from :func:`match` (strict, one-to-one) instead of
    SDC2's cross-match (within the convolved size and the line width, multi-parameter error
    below 5), so a duplicate detection of a source costs 1 instead of sharing the match;
    ``flux`` is our integrated flux density at the line peak, not the line integral;
    position angles repeat every 180 degrees (a Gaussian ellipse), not 360; there is no
    inclination sub-score, so a match earns the mean of six, not seven. A parameter the
    catalogue does not give scores 0.
    """
    thresholds = {**SDC2_THRESHOLDS, **(thresholds or {})}
    n = len(pairs)
    out = Table(pairs, copy=False)

    def have(*names):
        return all(f"{a}_{w}" in pairs.colnames for a in names for w in ("true", "pred"))

    def score(error, threshold):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.minimum(1.0, threshold / np.abs(error))
        return np.where(np.isfinite(s), s, 0.0)

    def rel(name):
        t = np.asarray(pairs[f"{name}_true"], float)
        return (np.asarray(pairs[f"{name}_pred"], float) - t) / t

    zero = np.zeros(n)
    subs = {}
    if have("fwhm_x", "fwhm_y") and "separation" in pairs.colnames:
        major_t, pa_t = _major_axis(pairs, "true")
        major_p, pa_p = _major_axis(pairs, "pred")
        beam = np.asarray(pairs["beam_fwhm_pix"], float) if "beam_fwhm_pix" in pairs.colnames else np.full(n, np.nan)
        subs["position"] = score(np.asarray(pairs["separation"]) / np.hypot(2 * beam, major_t), thresholds["position"])
        subs["size"] = score((major_p - major_t) / major_t, thresholds["size"])
        subs["pa"] = score(angle_difference(pa_p, pa_t), thresholds["pa"]) if have("pa_deg") else zero
    else:
        subs["position"] = subs["size"] = subs["pa"] = zero
    if have("z", "fwhm_z"):
        w20 = np.asarray(pairs["fwhm_z_true"], float) * W20_PER_FWHM
        subs["frequency"] = score((np.asarray(pairs["z_pred"]) - np.asarray(pairs["z_true"])) / w20, thresholds["frequency"])
        subs["line_width"] = score(rel("fwhm_z"), thresholds["line_width"])
    else:
        subs["frequency"] = subs["line_width"] = zero
    subs["flux"] = score(rel("flux"), thresholds["flux"]) if have("flux") else zero
    for name in SDC2_THRESHOLDS:
        out[f"sdc2_{name}"] = subs[name]
    out["sdc2"] = np.mean([subs[name] for name in SDC2_THRESHOLDS], axis=0) if n else np.zeros(0)
    return out


def angle_difference(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """``a - b`` for position angles, which repeat every 180 degrees, in ``[-90, 90)``."""
    return (np.asarray(a_deg) - np.asarray(b_deg) + 90.0) % 180.0 - 90.0


def _brighter(pairs: Table, min_snr: float | None) -> Table:
    """The pairs whose true SNR exceeds ``min_snr`` (all of them for None)."""
    if min_snr is None:
        return pairs
    if "snr_true" not in pairs.colnames:
        raise ValueError("min_snr needs the matched pairs' true SNR (snr_true)")
    return pairs[np.asarray(pairs["snr_true"], float) > min_snr]


def _elongated(pairs: Table, min_axis_ratio: float) -> np.ndarray:
    """Which pairs' true major axis is at least ``min_axis_ratio`` times the minor (all where the
    truth has no shape): the position angle of a nearly round source is not defined."""
    if {"fwhm_x_true", "fwhm_y_true"} <= set(pairs.colnames):
        major, minor = np.asarray(pairs["fwhm_x_true"], float), np.asarray(pairs["fwhm_y_true"], float)
        return major >= min_axis_ratio * np.maximum(minor, 1e-9)
    return np.ones(len(pairs), bool)


def parameter_residuals(pairs: Table, min_snr: float | None = None, min_axis_ratio_pa: float = 1.0) -> Table:
    """Mean and std of ``true - predicted`` for each parameter (the paper's Table 5).

    Flux residuals are in mJy; position angles are wrapped to ``[-90, 90)`` degrees.

    Parameters
    ----------
    pairs
        Matched pairs from :func:`evaluate`.
    min_snr
        Keep only pairs whose true peak SNR exceeds this (needs ``snr_true``); None keeps all.
    min_axis_ratio_pa
        The position angle's row keeps only sources whose true major/minor axis ratio is at
        least this: the angle of a nearly round source is not defined (the issue's targets
        use 1.5).
    """
    pairs = _brighter(pairs, min_snr)
    rows = []
    for name, unit in PARAMETERS.items():
        if f"{name}_true" not in pairs.colnames or f"{name}_pred" not in pairs.colnames:
            continue
        t, p = np.asarray(pairs[f"{name}_true"], float), np.asarray(pairs[f"{name}_pred"], float)
        if name == "pa_deg":
            d = angle_difference(t, p)
            if min_axis_ratio_pa > 1.0:
                d = d[_elongated(pairs, min_axis_ratio_pa)]
        elif name == "flux":
            d = (t - p) * 1e3
        else:
            d = t - p
        d = d[np.isfinite(d)]
        rows.append((name, unit, len(d), float(np.mean(d)) if len(d) else np.nan, float(np.std(d)) if len(d) else np.nan))
    return Table(rows=rows, names=("parameter", "unit", "n", "mean", "std"))


def parameter_pulls(pairs: Table, min_snr: float | None = None, min_axis_ratio_pa: float = 1.5) -> Table:
    """How well a catalogue's errors describe its residuals: the pulls ``(predicted - true) / error``.

    Errors that are right give pulls of mean 0 and std 1, with 68% of them within 1. Only the
    parameters with an error column (``err_<name>_pred``, from :func:`evaluate`) are listed.

    Parameters
    ----------
    pairs
        Matched pairs from :func:`evaluate`.
    min_snr, min_axis_ratio_pa
        As for :func:`parameter_residuals` (the position angle of a nearly round source is
        not defined).

    Returns
    -------
    astropy.table.Table
        ``parameter, n, mean, std, within_1`` (the fraction of pulls within 1).

    Examples
    --------
    >>> pairs = Table({"x_true": [1.0, 2.0, 3.0], "x_pred": [1.5, 1.0, 3.0], "err_x_pred": [0.5, 1.0, 0.2]})
    >>> [round(float(v), 3) for v in parameter_pulls(pairs)[0]["mean", "std", "within_1"]]
    [0.0, 0.816, 0.333]
    """
    pairs = _brighter(pairs, min_snr)
    rows = []
    for name in PARAMETERS:
        if not {f"{name}_true", f"{name}_pred", f"err_{name}_pred"} <= set(pairs.colnames):
            continue
        t, p = np.asarray(pairs[f"{name}_true"], float), np.asarray(pairs[f"{name}_pred"], float)
        d = angle_difference(p, t) if name == "pa_deg" else p - t
        keep = _elongated(pairs, min_axis_ratio_pa) if name == "pa_deg" else np.ones(len(d), bool)
        pull = d[keep] / np.asarray(pairs[f"err_{name}_pred"], float)[keep]
        pull = pull[np.isfinite(pull)]
        rows.append((name, len(pull), *((float(np.mean(pull)), float(np.std(pull)), float(np.mean(np.abs(pull) < 1)))
                                        if len(pull) else (np.nan,) * 3)))
    return Table(rows=rows, names=("parameter", "n", "mean", "std", "within_1"),
                 dtype=(str, int, float, float, float))


def position_residuals(pairs: Table, min_snr: float = 5.0) -> dict[str, float]:
    """Median and robust scatter (``mad_std``) of ``predicted - true`` x and y, in pixels, for
    the matched sources brighter than ``min_snr`` (the paper's Table 5 targets positions so)."""
    bright = pairs[np.asarray(pairs["snr_true"], float) > min_snr]
    out: dict[str, float] = {"n": len(bright)}
    for axis in "xy":
        d = np.asarray(bright[f"{axis}_pred"], float) - np.asarray(bright[f"{axis}_true"], float)
        out[f"median d{axis}"] = float(np.median(d)) if len(d) else np.nan
        out[f"scatter d{axis}"] = float(mad_std(d)) if len(d) else np.nan
    return out


def flux_error_vs_snr(pairs: Table, edges: Sequence[float] = (0, 3, 5, 10, 20, np.inf)) -> Table:
    """Relative flux error ``(pred - true) / true`` in bins of true SNR (the paper's Fig. 20)."""
    for col in ("flux_true", "flux_pred", "snr_true"):
        if col not in pairs.colnames:
            raise ValueError(f"matched pairs lack the column {col!r}")
    rel = (np.asarray(pairs["flux_pred"]) - pairs["flux_true"]) / np.asarray(pairs["flux_true"])
    snr = np.asarray(pairs["snr_true"])
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (snr >= lo) & (snr < hi)
        rows.append((lo, hi, int(sel.sum()), float(np.mean(rel[sel])) if sel.any() else np.nan,
                     float(np.std(rel[sel])) if sel.any() else np.nan))
    return Table(rows=rows, names=("snr_min", "snr_max", "n", "mean_rel_error", "std_rel_error"))


def recall_vs_snr(truths: Iterable[Table], pairs: dict[str, Table],
                  edges: Sequence[float] = (0, 2, 3, 5, 10, np.inf)) -> Table:
    """Share of the true sources each finder recovers, in bins of true SNR (one row per finder).

    ``pairs`` maps a finder's name to its matched pairs (from :func:`evaluate` or
    :func:`compare_finders`), which carry ``snr_true``.
    """
    snr = np.concatenate([np.asarray(t["snr"], float) for t in truths])
    bins = list(zip(edges[:-1], edges[1:]))
    rows = []
    for name, found in pairs.items():
        if "snr_true" not in found.colnames:
            raise ValueError(f"matched pairs of {name!r} lack the column 'snr_true'")
        got = np.asarray(found["snr_true"], float)
        rows.append([name] + [np.sum((got >= lo) & (got < hi)) / max(np.sum((snr >= lo) & (snr < hi)), 1)
                              for lo, hi in bins])
    table = Table(rows=rows, names=["finder"] + [f"SNR {lo}-{hi}" for lo, hi in bins])
    for col in table.colnames[1:]:
        table[col].format = ".2f"
    return table


def catalogue_agreement(references: Sequence[Table], others: Sequence[Table], *,
                        beam_fwhm_pix: float | Sequence[float], tolerance_beams: float = TOLERANCE_BEAMS) -> dict[str, float]:
    """How far two finders agree, cube by cube, with the strict match of :func:`match`.

    Each reference catalogue plays the truth (its ``fwhm_z`` sets the spectral tolerance).

    Returns
    -------
    dict
        ``n_reference, n_other, n_common`` (pooled over the cubes), ``reference_found`` (share
        of the reference's detections the other also makes), ``other_confirmed`` (share of the
        other's detections the reference also makes) and ``jaccard``
        (``n_common / (n_reference + n_other - n_common)``; 1 when both find the same).
    """
    beams = list(beam_fwhm_pix) if np.ndim(beam_fwhm_pix) == 1 else [beam_fwhm_pix] * len(references)
    n_ref = n_other = n_common = 0
    for ref, other, beam in zip(references, others, beams, strict=True):
        n_ref += len(ref)
        n_other += len(other)
        n_common += len(match(ref, other, beam_fwhm_pix=beam, tolerance_beams=tolerance_beams))
    union = n_ref + n_other - n_common
    return {"n_reference": n_ref, "n_other": n_other, "n_common": n_common,
            "reference_found": n_common / n_ref if n_ref else 1.0,
            "other_confirmed": n_common / n_other if n_other else 1.0,
            "jaccard": n_common / union if union else 1.0}


def compare_finders(finders: dict[str, Callable[[Any], Table]], cubes: Sequence, truths: Sequence[Table],
                    **match_options) -> tuple[Table, dict[str, Table], dict[str, list[Table]]]:
    """Run every finder on the same cubes and score it (the paper's Table 4, strict matching).

    Parameters
    ----------
    finders
        Name -> function from a cube to a catalogue (e.g. a finder's ``predict``).
    cubes
        The cubes, in any form the finders read (read them once, e.g. with
        :func:`mlsky.alma.finder.as_cube`, so that the timing is the finders').
    truths
        The truth table of each cube.
    match_options
        Passed to :func:`evaluate` (``beam_fwhm_pix``, ``tolerance_beams``, ``criterion``).

    Returns
    -------
    table
        One row per finder: ``finder, tp, fp, fn, precision, recall, f1, mean_iou,
        sdc2_score, sdc2_per_source, s_per_cube``.
    pairs
        Finder name -> its matched pairs (see :func:`evaluate`), for the residuals.
    catalogues
        Finder name -> its catalogue of each cube.
    """
    rows, pairs, found = [], {}, {}
    for name, predict in finders.items():
        t0 = time.perf_counter()
        found[name] = [predict(c) for c in cubes]
        seconds = (time.perf_counter() - t0) / max(len(cubes), 1)
        scores, pairs[name] = evaluate(truths, found[name], **match_options)
        rows.append({"finder": name, **scores, "s_per_cube": seconds})
    table = Table(rows=rows)
    for col in ("precision", "recall", "f1", "mean_iou", "sdc2_per_source", "s_per_cube"):
        table[col].format = ".3f"
    table["sdc2_score"].format = ".1f"
    return table, pairs, found


def best_other(table: Table, finder: str, column: str = "f1", exclude: Sequence[str] = ()) -> tuple[str, str]:
    """The best finder of a :func:`compare_finders` table by ``column``, other than ``finder`` and
    ``exclude``, and where ``finder`` stands against it: ``"above"``, ``"level with"`` or ``"below"``.

    >>> from astropy.table import Table
    >>> best_other(Table({"finder": ["ours", "a", "b"], "f1": [0.8, 0.7, 0.8]}), "ours")
    ('b', 'level with')
    """
    value = dict(zip(table["finder"], table[column]))
    others = [k for k in value if k != finder and k not in exclude]
    if not others:
        raise ValueError(f"best_other: no finder besides {finder!r} in the table")
    best = str(max(others, key=value.get))
    gap = value[finder] - value[best]
    return best, "above" if gap > 1e-9 else ("level with" if gap > -1e-9 else "below")


def chance_catalogues(catalogues: Sequence[Table], shapes: Sequence[tuple[int, int, int]],
                      rng: np.random.Generator) -> list[Table]:
    """The same detections (number, box sizes, measured parameters) placed uniformly at random
    in each cube.

    Scoring them gives the chance level a finder has to beat.
    """
    shuffled = []
    for found, shape in zip(catalogues, shapes, strict=True):
        keep = [c for c in (*BOX, *CENTRE, *PARAMETERS) if c in found.colnames]
        table = Table({c: np.asarray(found[c], float) for c in keep}) if len(found) else Table(
            {c: np.zeros(0) for c in BOX + CENTRE})
        for axis, size in zip("zyx", shape):
            width = table[f"{axis}1"] - table[f"{axis}0"]
            start = rng.uniform(0, np.clip(size - width, 0, None))
            table[f"{axis}0"], table[f"{axis}1"] = start, start + width
            table[axis] = start + width / 2
        shuffled.append(table)
    return shuffled
