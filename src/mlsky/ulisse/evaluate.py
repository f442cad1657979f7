"""How well one-shot retrieval finds objects of the prototype's kind, and naive baselines.

For every prototype of a class, the *precision* is the fraction of its ``n`` nearest
neighbours that share its class; the class's *base rate* is the fraction a random draw would
give. Their ratio, the *lift*, says how much the search helps; the *mean lift* averages the
classes' lifts (each class counts once, so the rare mergers weigh as much as the ellipticals).

Two naive representations set the bar a CNN must clear: raw pixels of the stamp and a colour
histogram of it.

Examples
--------
>>> import numpy as np
>>> from mlsky.ulisse.evaluate import retrieval_table
>>> X = np.r_[np.zeros((20, 2)), np.ones((20, 2))] + np.random.default_rng(0).normal(0, .1, (40, 2))
>>> table = retrieval_table(X, ["a"] * 20 + ["b"] * 20, n_neighbors=5)
>>> [round(float(v), 2) for v in table["lift"]]
[2.0, 2.0]
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from astropy.table import Table

from mlsky.ulisse.cutouts import cutout, read_image
from mlsky.ulisse.search import SimilaritySearch


def precision_at_n(features: np.ndarray, labels: Sequence[str], prototypes: np.ndarray, *, n_neighbors: int = 50,
                   metric: str = "euclidean") -> np.ndarray:
    """For each prototype row, the fraction of its ``n_neighbors`` sharing its label."""
    labels = np.asarray(labels)
    search = SimilaritySearch(n_neighbors=n_neighbors, metric=metric).fit(features)
    _, idx = search.kneighbors(indices=prototypes)
    return (labels[idx] == labels[prototypes][:, None]).mean(axis=1)


def retrieval_table(features: np.ndarray, labels: Sequence[str], *, n_neighbors: int = 50,
                    metric: str = "euclidean", classes: Sequence[str] | None = None) -> Table:
    """Precision, base rate and lift of one-shot retrieval, every object of a class a prototype.

    Parameters
    ----------
    features
        (N, D) representation of the sample.
    labels
        Class of each row; rows with an empty label are searched but never prototypes.
    classes
        Classes to evaluate (default: every non-empty label, in sorted order).

    Returns
    -------
    astropy.table.Table
        ``class``, ``prototypes``, ``base_rate``, ``precision`` (mean over prototypes),
        ``precision_sem`` (its standard error), ``lift`` (= precision / base rate).
    """
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(features):
        raise ValueError(f"{len(labels)} labels for {len(features)} feature rows.")
    classes = list(classes) if classes is not None else sorted(set(labels) - {""})
    prototypes = np.flatnonzero(np.isin(labels, classes))
    precision = precision_at_n(features, labels, prototypes, n_neighbors=n_neighbors, metric=metric)
    rows = []
    for name in classes:
        mine = labels[prototypes] == name
        if not mine.any():
            raise ValueError(f"no object of class {name!r} to use as a prototype.")
        p = precision[mine]
        base = float(np.mean(labels == name))
        sem = float(p.std(ddof=1) / np.sqrt(len(p))) if len(p) > 1 else float("nan")
        rows.append((name, int(mine.sum()), base, float(p.mean()), sem, float(p.mean()) / base))
    table = Table(rows=rows, names=("class", "prototypes", "base_rate", "precision", "precision_sem", "lift"))
    for col in ("base_rate", "precision", "precision_sem", "lift"):
        table[col].format = ".3f"
    return table


def lift_table(tables: Mapping[str | tuple, Table], *, names: Sequence[str] = ("representation",),
               columns: Mapping[str, Sequence] | None = None) -> Table:
    """One row per compared setting: its lift per prototype, per class, and each class's lift.

    Parameters
    ----------
    tables
        :func:`retrieval_table` results by setting; a key is a name, or a tuple of names (one
        per entry of ``names``, e.g. ``("blocks.5", "cosine")``). All must have the same classes.
    names
        Column names of the keys.
    columns
        Further columns (e.g. ``{"seconds": [...]}``), one value per table, placed after the keys.

    Returns
    -------
    astropy.table.Table
        The key columns, ``columns``, ``lift per prototype``, ``lift per class``, then one
        column per class; numbers shown with two decimals.

    Raises
    ------
    ValueError
        If the tables' classes differ, or a key or a column has the wrong length.
    """
    if not tables:
        raise ValueError("no retrieval tables to compare.")
    first = next(iter(tables.values()))
    classes = list(first["class"])
    keys = [key if isinstance(key, tuple) else (key,) for key in tables]
    if any(len(key) != len(names) for key in keys):
        raise ValueError(f"every key needs {len(names)} parts ({', '.join(names)}).")
    for key, table in zip(keys, tables.values()):
        if list(table["class"]) != classes:
            raise ValueError(f"{key}: classes {list(table['class'])} differ from {classes}.")
    out = Table([[key[i] for key in keys] for i in range(len(names))], names=list(names))
    for name, values in (columns or {}).items():
        if len(values) != len(tables):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(tables)} tables.")
        out[name] = values
    out["lift per prototype"] = [mean_lift(t) for t in tables.values()]
    out["lift per class"] = [mean_lift(t, by="class") for t in tables.values()]
    for i, name in enumerate(classes):
        out[name] = [float(t["lift"][i]) for t in tables.values()]
    for col in out.colnames[len(names):]:
        if out[col].dtype.kind == "f":
            out[col].format = ".2f"
    return out


def mean_lift(table: Table, *, by: str = "prototype") -> float:
    """The lift of a :func:`retrieval_table` averaged over prototypes or over classes.

    ``by="prototype"``: every prototype counts once (common classes weigh most);
    ``by="class"``: every class counts once (the rare mergers weigh as much as ellipticals).
    """
    if by == "prototype":
        return float(np.average(table["lift"], weights=table["prototypes"]))
    if by == "class":
        return float(np.mean(table["lift"]))
    raise ValueError(f"by={by!r}; use 'prototype' or 'class'.")


def mean_lift_sem(table: Table) -> float:
    """Standard error of :func:`mean_lift` per prototype: how far a difference of two lifts is noise.

    The mean is a weighted sum of the classes' lifts (weights: their shares of the prototypes),
    so its error adds each class's error of the lift, ``precision_sem / base_rate``, in
    quadrature with the same weights. A class with a single prototype has no error estimate and
    adds none.

    Examples
    --------
    >>> t = Table({"prototypes": [30, 10], "base_rate": [0.75, 0.25], "precision_sem": [0.03, 0.1]})
    >>> round(mean_lift_sem(t), 3)
    0.104
    """
    weights = np.asarray(table["prototypes"], dtype=float) / np.sum(table["prototypes"])
    lift_sem = np.asarray(table["precision_sem"], dtype=float) / np.asarray(table["base_rate"], dtype=float)
    return float(np.sqrt(np.nansum((weights * lift_sem) ** 2)))


def raw_pixels(stamp: np.ndarray, size: int = 32) -> np.ndarray:
    """The stamp block-averaged to ``size`` x ``size`` pixels, flattened (naive baseline 1)."""
    h = stamp.shape[0] // size * size
    return stamp[:h, :h].reshape(size, h // size, size, h // size, 3).mean(axis=(1, 3)).ravel()


def colour_histogram(stamp: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised joint RGB histogram of the stamp (naive baseline 2: colour, no shape)."""
    hist, _ = np.histogramdd(stamp.reshape(-1, 3), bins=bins, range=[(0, 1)] * 3)
    return (hist.ravel() / hist.sum()).astype(np.float32)


def baseline_features(paths: Sequence[str | Path], *, crop: str = "centre", align: bool = False,
                      radii: float = 3.0, size: int = 64) -> dict[str, np.ndarray]:
    """Raw-pixel and colour-histogram features of image files, from the CNN's own stamps.

    The stamps are the ones the CNN sees (same crop and pose, at ``size`` pixels), so the
    comparison is between representations, not pre-processing.

    Raises
    ------
    ImageReadError
        For the first file that cannot be read (skip bad files before comparing).
    """
    raw, colour = [], []
    for path in paths:
        stamp = cutout(read_image(path), crop=crop, align=align, radii=radii, size=size)
        raw.append(raw_pixels(stamp))
        colour.append(colour_histogram(stamp))
    return {"raw pixels": np.asarray(raw, np.float32), "colour histogram": np.asarray(colour, np.float32)}


def recursive_vs_single(search: SimilaritySearch, labels: Sequence[str], prototypes: Sequence[int], *,
                        n_neighbors: int = 10, iterations: int = 3, max_results: int = 50) -> Table:
    """Precision of recursive expansion against one query returning as many objects.

    For each prototype, :meth:`SimilaritySearch.expand` (``n_neighbors`` per query,
    ``iterations`` rounds, at most ``max_results`` objects) is compared with a single
    ``kneighbors`` query of the same size.

    Returns
    -------
    astropy.table.Table
        ``index``, ``label``, ``found``, ``precision_recursive``, ``precision_single``.
    """
    labels = np.asarray(labels).astype(str)
    rows = []
    for p in prototypes:
        expanded = search.expand(int(p), n_neighbors=n_neighbors, iterations=iterations, max_results=max_results)
        single = search.query(int(p), n_neighbors=len(expanded))
        rows.append((int(p), labels[p], len(expanded), float(np.mean(labels[expanded["index"]] == labels[p])),
                     float(np.mean(labels[single["index"]] == labels[p]))))
    return Table(rows=rows, names=("index", "label", "found", "precision_recursive", "precision_single"))


def recursive_by_class(table: Table, classes: Sequence[str]) -> Table:
    """A :func:`recursive_vs_single` table summarised per class (means over its prototypes).

    Returns
    -------
    astropy.table.Table
        ``class``, ``prototypes``, ``found``, ``precision recursive``, ``precision single query``.
    """
    rows = []
    for name in classes:
        mine = table["label"] == name
        rows.append((name, int(mine.sum()), float(np.mean(table["found"][mine])),
                     float(np.mean(table["precision_recursive"][mine])), float(np.mean(table["precision_single"][mine]))))
    out = Table(rows=rows, names=("class", "prototypes", "found", "precision recursive", "precision single query"))
    for col in out.colnames[2:]:
        out[col].format = ".3f"
    return out
