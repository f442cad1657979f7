"""Figures of the detection pipeline: Blobs Finder maps, Deep GRU spectra, residuals, curves.

Examples
--------
>>> from mlsky.alma.finder.plot import plot_training_curves
>>> fig = plot_training_curves({"deep_gru": {"train": [0.6, 0.4], "val": [0.5, 0.45]}})
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from astropy.table import Table

from mlsky.alma.finder import AlmaSourceFinder, as_cube, integrated_image
from mlsky.alma.finder.inputs import matched_filter_images
from mlsky.alma.metrics import angle_difference


def _rectangles(ax, rows, color: str, style: str = "-") -> None:
    from matplotlib.patches import Rectangle

    for r in rows:
        ax.add_patch(Rectangle((r["x0"] - 0.5, r["y0"] - 0.5), r["x1"] - r["x0"], r["y1"] - r["y0"], fill=False,
                               edgecolor=color, linestyle=style, linewidth=1.2))


def plot_training_curves(history: dict):
    """Training and validation loss per epoch of each network in a training history."""
    import matplotlib.pyplot as plt

    names = [k for k, v in history.items() if isinstance(v, dict) and "train" in v]
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5, 2.3 * rows), constrained_layout=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ax.plot(np.arange(1, len(history[name]["train"]) + 1), history[name]["train"], label="train")
        if history[name]["val"]:
            ax.plot(np.arange(1, len(history[name]["val"]) + 1), history[name]["val"], label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss")
    axes[0, 0].legend()
    return fig


def plot_blobs(finder: AlmaSourceFinder, cubes: Sequence):
    """Like the paper's Fig. 18: what Blobs Finder reads, the target footprints, its map.

    What it reads is the integrated dirty image for the paper's finder, and the matched-filtered
    image of the widest line for the fully convolutional one. True boxes in green, Blobs
    Finder's boxes (at the chosen threshold) in red. At most three cubes fit the page.
    """
    import matplotlib.pyplot as plt

    from mlsky.alma.finder.train import footprint_map

    cubes = list(cubes)[:3]
    fig, axes = plt.subplots(3, len(cubes), figsize=(6.5, 6.9), constrained_layout=True, squeeze=False)
    for j, sim in enumerate(cubes):
        cube = as_cube(sim)
        prob = finder.probability(cube)
        boxes = [dict(x0=b[0], x1=b[1], y0=b[2], y1=b[3]) for b in finder.boxes(prob)]
        widths = finder.config_.filter_widths
        seen = (matched_filter_images(cube, widths[-1:])[0], f"filtered, {widths[-1]} channels") if widths \
            else (integrated_image(cube), "integrated image")
        panels = [seen, (footprint_map(sim.truth, *prob.shape), "true footprints"),
                  (prob, "probability map")]
        for i, (image, title) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(image, origin="lower", cmap="inferno", vmin=0 if i else None)
            _rectangles(ax, sim.truth, "lime")
            if i == 2:
                _rectangles(ax, boxes, "red", "--")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def plot_spectra(finder: AlmaSourceFinder, sim, n: int = 3):
    """Like the paper's Fig. 13: each box's standardised dirty spectrum, Deep GRU's output,
    true (blue) and predicted (red) emission ranges."""
    import matplotlib.pyplot as plt

    cube = as_cube(sim)
    boxes = finder.boxes(finder.probability(cube))[:n]
    fig, axes = plt.subplots(1, max(len(boxes), 1), figsize=(6.5, 2.8), constrained_layout=True, squeeze=False)
    for ax, box in zip(axes[0], boxes):
        spec, prob = finder.focus(cube, box)
        ax.plot(spec, color="C0", lw=1, label="spectrum")
        ax.plot(prob * max(spec.max(), 1), "r:", label="Deep GRU")
        for r in sim.truth:
            if box[0] <= r["x"] < box[1] and box[2] <= r["y"] < box[3]:
                for edge in (r["z0"], r["z1"] - 1):
                    ax.axvline(edge, color="C0", lw=2, alpha=0.5)
        for row in finder.detections(box, spec, prob):
            for edge in (row["z0"], row["z1"] - 1):
                ax.axvline(edge, color="red", lw=1)
        ax.set_title(f"box at ({box[4]:.0f}, {box[5]:.0f})")
        ax.set_xlabel("channel")
    axes[0, 0].legend()
    return fig


def plot_residuals(pairs: Table, names: Sequence[str] = ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "flux")):
    """Like the paper's Fig. 19: predicted against true for each parameter, with the bisector."""
    import matplotlib.pyplot as plt

    names = [n for n in names if f"{n}_true" in pairs.colnames and f"{n}_pred" in pairs.colnames]
    if not len(pairs):
        raise ValueError("no matched pairs to plot: the finder matched no true source")
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5, 1.9 * rows + 0.4), constrained_layout=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        t, p = np.asarray(pairs[f"{name}_true"], float), np.asarray(pairs[f"{name}_pred"], float)
        if name == "pa_deg":
            p = t - angle_difference(t, p)
        if name == "flux":
            t, p = t * 1e3, p * 1e3
        ax.scatter(t, p, s=6)
        lo, hi = np.nanmin([t.min(), p.min()]), np.nanmax([t.max(), p.max()])
        ax.plot([lo, hi], [lo, hi], "r:")
        ax.set_title(name + (" [mJy]" if name == "flux" else ""))
        ax.set_xlabel("true")
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted")
    return fig
