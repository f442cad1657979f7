"""Figures of the ULISSE chapter: image grids and lifts over the base rate.

Examples
--------
>>> import numpy as np
>>> from mlsky.ulisse.plots import image_grid
>>> fig = image_grid([np.zeros((8, 8, 3))] * 4, ncols=2)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table

from mlsky.book import MIN_FONT_SIZE


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, ncols: int = 8,
               width: float = 6.8, overlays: Sequence[np.ndarray | None] | None = None) -> plt.Figure:
    """Images in a grid, with optional titles and (semi-transparent) overlay maps.

    Parameters
    ----------
    images
        RGB or grey images, drawn row by row.
    titles
        One title per image, shown at the book's smallest readable size (the panels are narrow).
    ncols
        Images per row.
    width
        Width of the figure in inches (the book's text column takes 7).
    overlays
        One map per image (or ``None`` for no overlay), stretched over it.
    """
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    size = width / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, size * nrows + 0.25 * (titles is not None) * nrows),
                             squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= len(images):
            continue
        ax.imshow(images[k])
        if overlays is not None and overlays[k] is not None:
            h, w = np.asarray(images[k]).shape[:2]
            ax.imshow(overlays[k], cmap="magma", alpha=0.55, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                      interpolation="bilinear")
        if titles is not None:
            ax.set_title(titles[k], fontsize=MIN_FONT_SIZE)
    return fig


def plot_lifts(tables: Mapping[str, Table], *, ax: plt.Axes | None = None) -> plt.Axes:
    """Grouped bars of each class's lift over its base rate, one colour per representation."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.8, 3.4), layout="constrained")
    names = list(tables)
    classes = list(next(iter(tables.values()))["class"])
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        table = tables[name]
        sem = np.asarray(table["precision_sem"]) / np.asarray(table["base_rate"])
        ax.bar(np.arange(len(classes)) + (j - (len(names) - 1) / 2) * width, table["lift"], width,
               yerr=sem, capsize=2, label=name)
    ax.axhline(1, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(classes)), classes)
    ax.set_ylabel("precision / base rate")
    ax.legend()
    return ax
