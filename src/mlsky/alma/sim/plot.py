"""Figures of simulated cubes: a Fig. 1 of Delli Veneri et al. (2023)-like overview.

Examples
--------
>>> from mlsky.alma.sim.simulate import random_cube
>>> from mlsky.alma.sim.plot import plot_cube_overview
>>> fig = plot_cube_overview(random_cube(0, shape=(32, 64, 64)))
"""

from __future__ import annotations

import numpy as np

from mlsky.alma.sim.simulate import SimulatedCube


def _boxes(ax, truth) -> None:
    from matplotlib.patches import Rectangle

    for i, row in enumerate(truth):
        ax.add_patch(Rectangle((row["x0"] - 0.5, row["y0"] - 0.5), row["x1"] - row["x0"], row["y1"] - row["y0"],
                               fill=False, edgecolor=f"C{i % 10}", linewidth=1.2))


def plot_cube_overview(cube: SimulatedCube, source: int = 0, beam_zoom: int = 32):
    """Sky and dirty cube stacked in frequency (with the truth's boxes), dirty beam, and one source's spectrum.

    Parameters
    ----------
    cube
        A :class:`~mlsky.alma.sim.simulate.SimulatedCube` (or a CASA reference cube).
    source
        Row of ``cube.truth`` whose spectrum is shown (summed over its bounding box).
    beam_zoom
        Half-width (pixels) of the beam panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(6.5, 5.6), constrained_layout=True)
    axes = axes.ravel()
    n_chan, ny, nx = cube.dirty.shape
    panels = [
        (cube.sky.sum(axis=0), "sky, summed [Jy/pixel]"),
        (cube.dirty.sum(axis=0), "dirty cube, summed [Jy/beam]"),
    ]
    for ax, (image, title) in zip(axes[:2], panels):
        im = ax.imshow(image, origin="lower", cmap="inferno")
        _boxes(ax, cube.truth)
        ax.set_title(title)
        ax.set_xlabel("x [pixel]")
        fig.colorbar(im, ax=ax, shrink=0.8)
    axes[0].set_ylabel("y [pixel]")
    cy, cx = np.unravel_index(np.argmax(cube.beam), cube.beam.shape)
    z = beam_zoom
    im = axes[2].imshow(cube.beam[max(cy - z, 0) : cy + z, max(cx - z, 0) : cx + z], origin="lower", cmap="RdBu_r",
                        vmin=-0.3, vmax=1, extent=(-z - 0.5, z - 0.5, -z - 0.5, z - 0.5))
    bmaj = cube.header.get("BMAJ", np.nan) * 3600
    bmin = cube.header.get("BMIN", np.nan) * 3600
    axes[2].set_title(f'dirty beam ({bmaj:.2f}" x {bmin:.2f}")')
    axes[2].set_xlabel("offset [pixel]")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    if len(cube.truth):
        row = cube.truth[source]
        box = np.s_[:, row["y0"] : row["y1"], row["x0"] : row["x1"]]
        chan = np.arange(n_chan)
        axes[3].step(chan, cube.dirty[box].mean(axis=(1, 2)), where="mid", color="C0")
        axes[3].set_ylabel("dirty, box mean [Jy/beam]", color="C0")
        sky_ax = axes[3].twinx()
        sky_ax.step(chan, cube.sky[box].sum(axis=(1, 2)), where="mid", color="C3")
        sky_ax.set_ylabel("sky, box sum [Jy]", color="C3")
        axes[3].axvspan(row["z0"] - 0.5, row["z1"] - 0.5, color="0.9", zorder=0)
        axes[3].set_title(f"source {source}, SNR {row['snr']:.1f}")
    axes[3].set_xlabel("channel")
    return fig
