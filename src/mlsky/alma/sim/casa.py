"""The check against CASA: cubes made with ``simobserve`` + ``tclean`` from the same set-up.

The data set ``alma_casa_reference`` (found through :func:`mlsky.data.locate`) holds dirty
cubes, sky models and dirty beams made with CASA 6.7 from ``alma.cycle9.3.cfg``: 230 GHz,
64 channels of 10 MHz, 128 x 128 pixels of 0.1", declination -30 deg around transit, 2400 s
in 10 s integrations, thermal noise from ``tsys-atm`` at pwv 0.8 mm, Briggs robust 0.5 --
the defaults of :class:`~mlsky.alma.sim.uv.ObservationConfig`. :func:`compare_simulator_with_casa`
observes each reference sky with mlsky's simulator and compares the beam, the noise's
spatial correlation and its level.

Examples
--------
>>> from mlsky.alma.sim.casa import compare_simulator_with_casa
>>> table = compare_simulator_with_casa(["casa_1000"])   # doctest: +SKIP
>>> bool(table["within_15pct"].all())                    # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from mlsky.alma.io import read_cube, read_psf
from mlsky.alma.sim.simulate import SimulatedCube, _with_snr, fit_beam, simulate_cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA, validate_sources
from mlsky.alma.sim.uv import ObservationConfig
from mlsky.data import locate

DATASET = "alma_casa_reference"
#: Agreement asked of the simulator: relative difference to CASA of at most this.
TOLERANCE = 0.15
#: A channel counts as noise-only when its total sky flux is below this fraction of the noise rms.
NOISE_ONLY_FLUX = 0.05


def casa_reference_names(folder: str | os.PathLike | None = None) -> list[str]:
    """Names (``casa_NNNN``) of the reference cubes, or of the CASA cubes in ``folder`` made the
    same way (``benchmarks/alma_casa_cubes.py``)."""
    folder = locate(DATASET) if folder is None else Path(folder)
    return sorted(p.name.removesuffix("_truth.json") for p in folder.glob("casa_*_truth.json"))


def casa_config(meta: dict) -> ObservationConfig:
    """The :class:`ObservationConfig` of a reference cube, from its truth file."""
    return ObservationConfig(
        antenna_config=meta.get("antenna_config", "alma.cycle9.3.cfg"),
        freq_hz=float(meta.get("freq0_hz", 230e9)),
        channel_width_hz=float(meta.get("dfreq_hz", 10e6)),
        cell_arcsec=float(meta.get("cell_arcsec", 0.1)),
    )


def load_casa_reference(name: str | int, folder: str | os.PathLike | None = None) -> SimulatedCube:
    """One CASA reference cube as a :class:`SimulatedCube` (truth in FWHM, as mlsky writes it).

    Parameters
    ----------
    name
        ``"casa_1000"`` or ``1000``.
    folder
        Where the cube's files are; default the ``alma_casa_reference`` data set.

    Raises
    ------
    KeyError
        Unknown name (the message lists those available).
    """
    folder = locate(DATASET) if folder is None else Path(folder)
    name = f"casa_{name}" if isinstance(name, int) or str(name).isdigit() else str(name)
    truth_path = folder / f"{name}_truth.json"
    if not truth_path.is_file():
        raise KeyError(f"no CASA cube {name!r} in {folder}; available: {', '.join(casa_reference_names(folder))}")
    meta = json.loads(truth_path.read_text())
    dirty, header = read_cube(folder / f"{name}_dirty.fits")
    sky, _ = read_cube(folder / f"{name}_sky.fits")
    beam = read_psf(folder / f"{name}_psf.fits").astype(np.float32)
    sources = meta["sources"]
    table = Table(
        dict(
            x=[s["x"] for s in sources],
            y=[s["y"] for s in sources],
            z=[s["z"] for s in sources],
            fwhm_x=[s["sigma_x"] * FWHM_PER_SIGMA for s in sources],
            fwhm_y=[s["sigma_y"] * FWHM_PER_SIGMA for s in sources],
            pa_deg=[s["pa_deg"] for s in sources],
            fwhm_z=[s["sigma_z"] * FWHM_PER_SIGMA for s in sources],
            peak_jy_per_pix=[s["peak_jy_per_pix"] for s in sources],
        )
    )
    truth = validate_sources(table, dirty.shape)
    rms = float(meta["noise_rms_jy_per_beam"])
    bmaj, bmin, bpa = fit_beam(beam)
    truth = _with_snr(truth, (bmaj, bmin), np.full(dirty.shape[0], rms))
    truth.meta.update(name=name, seed=meta.get("seed"), noise_rms=rms, source="CASA 6.7 simobserve + tclean",
                      beam_fwhm_pix=float(np.sqrt(bmaj * bmin)))
    cell = abs(float(header.get("CDELT2", 0.1 / 3600)))
    header["BMAJ"], header["BMIN"], header["BPA"] = bmaj * cell, bmin * cell, bpa
    return SimulatedCube(dirty, sky, beam, truth, header, rms, np.full(dirty.shape[0], rms, np.float32))


def noise_channels(cube: SimulatedCube) -> np.ndarray:
    """Channels whose total sky flux is below 5% of the noise: there the dirty cube is noise."""
    flux = cube.sky.sum(axis=(1, 2))
    return np.flatnonzero(flux < NOISE_ONLY_FLUX * cube.noise_rms)


def noise_correlation_length(images: np.ndarray) -> float:
    """FWHM (pixels, geometric mean of major and minor) of the noise's spatial autocorrelation.

    ``images`` is a stack of noise-only channel images; their autocorrelations (by FFT,
    mean removed) are averaged, and a 2-D Gaussian is fitted to the central peak.
    """
    images = np.asarray(images, dtype=float)
    images = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.rfft2(images)) ** 2
    acf = np.fft.fftshift(np.fft.irfft2(power.mean(axis=0), s=images.shape[1:]))
    major, minor, _ = fit_beam(acf / acf.max())
    return float(np.sqrt(major * minor))


def compare_cube(reference: SimulatedCube, seed: int = 0, config: ObservationConfig | None = None) -> dict:
    """Observe a reference cube's sky with mlsky and measure beam, noise correlation and noise rms of both."""
    config = config or casa_config({})
    ours = simulate_cube(reference.truth, shape=reference.shape, config=config, seed=seed)
    channels = noise_channels(reference)
    if len(channels) < 2:
        raise ValueError(f"{reference.truth.meta.get('name')}: fewer than 2 noise-only channels to measure noise on")
    bmaj_c, bmin_c, bpa_c = fit_beam(reference.beam)
    bmaj_o, bmin_o, bpa_o = fit_beam(ours.beam)
    corr_c = noise_correlation_length(reference.dirty[channels])
    corr_o = noise_correlation_length(ours.dirty[channels])
    rms_c = reference.dirty[channels].std(axis=(1, 2))
    rms_o = ours.dirty[channels].std(axis=(1, 2))
    # Per channel, CASA's measured rms against our expected one (no sampling error on ours;
    # CASA's carries ~4% from the ~400 independent beams of a 128 x 128 channel).
    per_channel = ours.noise_rms_per_channel[channels] / rms_c
    row = dict(
        name=reference.truth.meta.get("name", ""),
        n_noise_channels=len(channels),
        bmaj_ours=bmaj_o * config.cell_arcsec, bmaj_casa=bmaj_c * config.cell_arcsec,
        bmin_ours=bmin_o * config.cell_arcsec, bmin_casa=bmin_c * config.cell_arcsec,
        bpa_ours=bpa_o, bpa_casa=bpa_c,
        corr_len_ours=corr_o * config.cell_arcsec, corr_len_casa=corr_c * config.cell_arcsec,
        rms_ours=float(np.median(rms_o)), rms_casa=float(np.median(rms_c)),
        rms_ratio_min=float(per_channel.min()), rms_ratio_max=float(per_channel.max()),
        beam_correlation=float(np.corrcoef(ours.beam.ravel(), reference.beam.ravel())[0, 1]),
    )
    # The signal path (primary beam, flux scale, beam orientation): CASA's dirty cube against
    # our noise-free one, inside the sources' boxes.
    clean = simulate_cube(reference.truth, shape=reference.shape, config=config.replace(noise=False))
    inside = np.zeros(reference.shape, bool)
    for src in reference.truth:
        inside[src["z0"]:src["z1"], src["y0"]:src["y1"], src["x0"]:src["x1"]] = True
    model, data = clean.dirty[inside].astype(float), reference.dirty[inside].astype(float)
    row["signal_slope"] = float((model * data).sum() / (model * model).sum())
    row["residual_over_noise"] = float((data - model).std() / reference.noise_rms)
    row["bmaj_ratio"] = row["bmaj_ours"] / row["bmaj_casa"]
    row["bmin_ratio"] = row["bmin_ours"] / row["bmin_casa"]
    row["corr_len_ratio"] = row["corr_len_ours"] / row["corr_len_casa"]
    row["rms_ratio"] = row["rms_ours"] / row["rms_casa"]
    ratios = [row["bmaj_ratio"], row["bmin_ratio"], row["corr_len_ratio"], row["rms_ratio_min"], row["rms_ratio_max"]]
    row["within_15pct"] = bool(np.all(np.abs(np.array(ratios) - 1) <= TOLERANCE))
    return row


def compare_simulator_with_casa(names: list[str] | None = None, seed: int = 0) -> Table:
    """Compare mlsky's simulator with every CASA reference cube (or those named).

    For each cube, its sky (from the truth file) is observed with mlsky's simulator in the
    same set-up. Columns: beam FWHM major and minor (arcsec) and position angle (deg) of
    a Gaussian fit to each dirty beam; noise correlation length (arcsec, FWHM of the noise
    autocorrelation in noise-only channels); median noise rms per noise-only channel
    (Jy/beam) measured on both, and the range over those channels of our expected rms over
    CASA's measured one (``rms_ratio_min``, ``rms_ratio_max``); ``*_ratio`` = ours / CASA; and
    ``within_15pct``, true when every ratio is within 15% of 1. Two more columns check the
    signal: ``signal_slope``, the least-squares slope of CASA's dirty cube on our noise-free
    one inside the sources' bounding boxes (1: same flux scale, primary beam and beam), and
    ``residual_over_noise``, the rms of their difference there over CASA's noise rms (1: what
    is left is noise).

    Returns
    -------
    astropy.table.Table
        One row per reference cube.
    """
    names = names or casa_reference_names()
    rows = [compare_cube(load_casa_reference(n), seed=seed + i) for i, n in enumerate(names)]
    table = Table(rows=rows)
    for col in ("bmaj_ours", "bmaj_casa", "bmin_ours", "bmin_casa", "corr_len_ours", "corr_len_casa"):
        table[col].unit = "arcsec"
    for col in ("bpa_ours", "bpa_casa"):
        table[col].unit = "deg"
    for col in ("rms_ours", "rms_casa"):
        table[col].unit = "Jy/beam"
    table.meta["tolerance"] = TOLERANCE
    return table
