"""Scoring a catalogue against the truth, as in Delli Veneri et al. (2023), Tables 4 and 5.

A detection and a true source can be matched when the centre of either lies inside the other's
3-D bounding box; among those pairs the assignment that maximises the summed 3-D IoU is taken
(Hungarian algorithm), so each source and each detection is used once. Matched pairs are true
positives (TP), unmatched detections false positives (FP), unmatched sources false
negatives (FN).

Catalogues and truth tables share the column names of :mod:`mlsky.alma.sim.simulate`: ``x, y, z``
(0-based pixels / channels), the box ``x0, x1, y0, y1, z0, z1`` (inclusive-exclusive) and,
where estimated, ``fwhm_x, fwhm_y, pa_deg, fwhm_z, flux``.

Examples
--------
>>> from astropy.table import Table
>>> truth = Table({"x": [10.0], "y": [10.0], "z": [5.0], "x0": [8], "x1": [13], "y0": [8],
...                "y1": [13], "z0": [3], "z1": [8]})
>>> found = Table({"x": [10.5], "y": [9.5], "z": [5.0], "x0": [8], "x1": [13], "y0": [7],
...                "y1": [12], "z0": [3], "z1": [8]})
>>> score = detection_scores(truth, found)
>>> score["tp"], score["fp"], score["fn"], round(score["mean_iou"], 3)
(1, 0, 0, 0.667)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from astropy.table import Table, vstack
from scipy.optimize import linear_sum_assignment

BOX = ("x0", "x1", "y0", "y1", "z0", "z1")
CENTRE = ("x", "y", "z")
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


def _boxes(table: Table) -> np.ndarray:
    if len(table) == 0:
        return np.zeros((0, 6))
    missing = [c for c in BOX + CENTRE if c not in table.colnames]
    if missing:
        raise ValueError(f"catalogue lacks the column(s) {', '.join(missing)}")
    return np.column_stack([np.asarray(table[c], float) for c in BOX])


def _centres(table: Table) -> np.ndarray:
    if len(table) == 0:
        return np.zeros((0, 3))
    return np.column_stack([np.asarray(table[c], float) for c in CENTRE])


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


def match(truth: Table, catalogue: Table) -> Table:
    """Pair detections with true sources; one row per pair: ``i_true, i_pred, iou``."""
    tb, pb = _boxes(truth), _boxes(catalogue)
    if len(tb) == 0 or len(pb) == 0:
        return Table({"i_true": np.zeros(0, int), "i_pred": np.zeros(0, int), "iou": np.zeros(0)})
    iou = box_iou_3d(tb, pb)
    allowed = _inside(_centres(catalogue), tb).T | _inside(_centres(truth), pb)
    # Allowed pairs with no overlap still beat forbidden ones, hence the small offset.
    gain = np.where(allowed, iou + 1e-6, -1.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    keep = gain[rows, cols] > 0
    return Table({"i_true": rows[keep], "i_pred": cols[keep], "iou": iou[rows[keep], cols[keep]]})


def detection_scores(truth: Table, catalogue: Table) -> dict[str, float]:
    """TP, FP, FN, precision, recall, F1 and mean IoU of the TPs for one cube."""
    return _scores(len(truth), len(catalogue), match(truth, catalogue)["iou"])


def _scores(n_true: int, n_pred: int, ious: Sequence[float]) -> dict[str, float]:
    tp = len(ious)
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_iou": float(np.mean(ious)) if tp else 0.0,
    }


def evaluate(truths: Iterable[Table], catalogues: Iterable[Table]) -> tuple[dict[str, float], Table]:
    """Score a finder over many cubes: pooled TP/FP/FN (as the paper) and the matched pairs.

    Returns
    -------
    scores
        ``tp, fp, fn, precision, recall, f1, mean_iou`` pooled over all cubes.
    pairs
        One row per TP: ``cube, i_true, i_pred, iou`` and, for every parameter of
        :data:`PARAMETERS` present in both tables, ``<name>_true`` and ``<name>_pred``
        (plus ``snr_true`` when the truth has an SNR).
    """
    n_true = n_pred = 0
    pairs = []
    for k, (truth, found) in enumerate(zip(truths, catalogues, strict=True)):
        m = match(truth, found)
        n_true += len(truth)
        n_pred += len(found)
        m["cube"] = np.full(len(m), k)
        for name in [*PARAMETERS, "snr"]:
            if name in truth.colnames:
                m[f"{name}_true"] = np.asarray(truth[name], float)[m["i_true"]]
            if name in found.colnames and name != "snr":
                m[f"{name}_pred"] = np.asarray(found[name], float)[m["i_pred"]]
        pairs.append(m)
    joined = vstack(pairs) if pairs else Table()
    return _scores(n_true, n_pred, joined["iou"] if len(joined) else []), joined


def angle_difference(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """``a - b`` for position angles, which repeat every 180 degrees, in ``[-90, 90)``."""
    return (np.asarray(a_deg) - np.asarray(b_deg) + 90.0) % 180.0 - 90.0


def parameter_residuals(pairs: Table) -> Table:
    """Mean and std of ``true - predicted`` for each parameter (the paper's Table 5).

    Flux residuals are in mJy; position angles are wrapped to ``[-90, 90)`` degrees.
    """
    rows = []
    for name, unit in PARAMETERS.items():
        if f"{name}_true" not in pairs.colnames or f"{name}_pred" not in pairs.colnames:
            continue
        t, p = np.asarray(pairs[f"{name}_true"], float), np.asarray(pairs[f"{name}_pred"], float)
        if name == "pa_deg":
            d = angle_difference(t, p)
        elif name == "flux":
            d = (t - p) * 1e3
        else:
            d = t - p
        d = d[np.isfinite(d)]
        rows.append((name, unit, len(d), float(np.mean(d)) if len(d) else np.nan, float(np.std(d)) if len(d) else np.nan))
    return Table(rows=rows, names=("parameter", "unit", "n", "mean", "std"))


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


def compare_finders(finders: dict[str, Callable[[Any], Table]], cubes: Sequence,
                    truths: Sequence[Table]) -> tuple[Table, dict[str, Table], dict[str, list[Table]]]:
    """Run every finder on the same cubes and score it (the paper's Table 4).

    Parameters
    ----------
    finders
        Name -> function from a cube to a catalogue (e.g. a finder's ``predict``).
    cubes
        The cubes, in any form the finders read (read them once, e.g. with
        :func:`mlsky.alma.finder.as_cube`, so that the timing is the finders').
    truths
        The truth table of each cube.

    Returns
    -------
    table
        One row per finder: ``finder, tp, fp, fn, precision, recall, f1, mean_iou, s_per_cube``.
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
        scores, pairs[name] = evaluate(truths, found[name])
        rows.append({"finder": name, **scores, "s_per_cube": seconds})
    table = Table(rows=rows)
    for col in ("precision", "recall", "f1", "mean_iou", "s_per_cube"):
        table[col].format = ".3f"
    return table, pairs, found


def chance_catalogues(catalogues: Sequence[Table], shapes: Sequence[tuple[int, int, int]],
                      rng: np.random.Generator) -> list[Table]:
    """The same detections (number and box sizes) placed uniformly at random in each cube.

    Scoring them gives the chance level a finder has to beat.
    """
    shuffled = []
    for found, shape in zip(catalogues, shapes, strict=True):
        table = Table({c: np.asarray(found[c], float) for c in BOX + CENTRE}) if len(found) else Table(
            {c: np.zeros(0) for c in BOX + CENTRE})
        for axis, size in zip("zyx", shape):
            width = table[f"{axis}1"] - table[f"{axis}0"]
            start = rng.uniform(0, np.clip(size - width, 0, None))
            table[f"{axis}0"], table[f"{axis}1"] = start, start + width
            table[axis] = start + width / 2
        shuffled.append(table)
    return shuffled
