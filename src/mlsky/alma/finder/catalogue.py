"""The catalogue every finder writes: pixel and sky positions, shapes, fluxes, with units."""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.table import Table

from mlsky.alma.finder.cube import Cube, original_pixel
from mlsky.alma.sim.sky import FWHM_PER_SIGMA, validate_sources

#: Columns of every catalogue written by the pipeline and the peers.
CATALOGUE_COLUMNS = (
    "x", "y", "z", "x0", "x1", "y0", "y1", "z0", "z1", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z",
    "flux", "ra", "dec", "freq", "deblend",
)  # fmt: skip
#: The 1-sigma errors that a catalogue holds where its finder measured them (all of them for the
#: pipeline's :func:`~mlsky.alma.finder.measure.measure_source`; SoFiA-2 gives those of the
#: position, line centre and flux), in the units of their parameters.
ERROR_COLUMNS = ("err_x", "err_y", "err_z", "err_fwhm_x", "err_fwhm_y", "err_pa_deg", "err_fwhm_z", "err_flux")


def finish_catalogue(rows: list[dict], cube: Cube, factors: tuple[float, float] = (1.0, 1.0)) -> Table:
    """Catalogue from source rows measured on a grid zoomed by ``factors`` (spectral, spatial)
    from ``cube``'s: back to the cube's grid, boxes from the estimated shapes (the rule of the
    simulator's truth), sky coordinates from the cube's WCS, units; and each of
    :data:`ERROR_COLUMNS` that every row has, after the others."""
    fz, fxy = factors
    n_chan, ny, nx = cube.data.shape
    cols = {c: [] for c in ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z", "flux", "deblend")}
    # Errors scale with the zoom as their parameters (the angle's and flux's do not).
    zoom = {"err_x": fxy, "err_y": fxy, "err_z": fz, "err_fwhm_x": fxy, "err_fwhm_y": fxy, "err_fwhm_z": fz}
    errors = {c: [r[c] / zoom.get(c, 1.0) for r in rows] for c in ERROR_COLUMNS if rows and all(c in r for r in rows)}
    for r in rows:
        cols["x"].append(float(original_pixel(r["x"], fxy)))
        cols["y"].append(float(original_pixel(r["y"], fxy)))
        cols["z"].append(float(original_pixel(r["z"], fz)))
        cols["fwhm_x"].append(max(r["fwhm_x"], 0.1) / fxy)
        cols["fwhm_y"].append(max(r["fwhm_y"], 0.1) / fxy)
        cols["pa_deg"].append(r["pa_deg"] % 180.0)
        cols["fwhm_z"].append(max(r["fwhm_z"], 0.1) / fz)
        cols["flux"].append(r["flux"])
        cols["deblend"].append(bool(r.get("deblend", False)))
    table = Table({k: np.asarray(v, dtype=bool if k == "deblend" else float) for k, v in cols.items()})
    for name, size in (("x", nx), ("y", ny), ("z", n_chan)):
        table[name] = np.clip(table[name], 0, size - 1)
    table["peak_jy_per_pix"] = table["flux"] / (2 * np.pi * table["fwhm_x"] * table["fwhm_y"] / FWHM_PER_SIGMA**2)
    table = validate_sources(table, (n_chan, ny, nx))
    ra, dec, freq = cube.wcs.pixel_to_world_values(table["x"], table["y"], table["z"]) if len(table) else ([], [], [])
    table["ra"] = np.asarray(ra, float) * u.deg
    table["dec"] = np.asarray(dec, float) * u.deg
    table["freq"] = (np.asarray(freq, float) * u.Hz).to(u.GHz)
    table["flux"].unit = u.Jy
    for name in ("x", "y", "fwhm_x", "fwhm_y"):
        table[name].unit = u.pix
    table["pa_deg"].unit = u.deg
    table["fwhm_x_arcsec"] = table["fwhm_x"].value * cube.pixel_scale_arcsec * u.arcsec
    table["fwhm_y_arcsec"] = table["fwhm_y"].value * cube.pixel_scale_arcsec * u.arcsec
    table["fwhm_z_MHz"] = (table["fwhm_z"] * cube.channel_width_hz * u.Hz).to(u.MHz)
    table.remove_column("peak_jy_per_pix")
    table.meta["cube"] = cube.name
    table = table[[*CATALOGUE_COLUMNS, "fwhm_x_arcsec", "fwhm_y_arcsec", "fwhm_z_MHz"]]
    for name, values in errors.items():
        unit = table[name[4:]].unit
        table[name] = np.asarray(values, float) * (unit if unit is not None else 1)
        table[name].description = f"1-sigma error of {name[4:]}"
    return table
