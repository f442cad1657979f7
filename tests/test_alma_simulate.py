"""Tests of the ALMA cube simulator (mlsky.alma): physics, I/O, data sets, bad input, CASA check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from mlsky.alma import (
    ObservationConfig,
    SimulatedCube,
    dirty_beam,
    fit_beam,
    load_antenna_config,
    random_cube,
    read_cube,
    simulate_cube,
    uv_coverage,
)
from mlsky.alma.sim.antenna import AntennaConfigError
from mlsky.alma.sim.dataset import load_shard, make_dataset, read_manifest
from mlsky.alma.sim.uv import system_temperature, visibility_noise

SMALL = (16, 64, 64)


def one_source(**changes) -> Table:
    row = dict(x=32.0, y=32.0, z=8.0, fwhm_x=5.0, fwhm_y=3.0, pa_deg=30.0, fwhm_z=4.0, peak_jy_per_pix=1e-3)
    row.update(changes)
    return Table({k: [v] for k, v in row.items()})


def test_antenna_config_from_casadata_and_from_path(tmp_path):
    ants = load_antenna_config("alma.cycle9.3.cfg")
    assert len(ants) == 43 and ants.meta["observatory"] == "ALMA"
    assert set(ants["diam"].value) == {12.0}
    path = tmp_path / "two.cfg"
    path.write_text("# observatory=ALMA\n# coordsys=LOC\n0 0 0 12 P1\n100 0 0 12 P2\n")
    assert len(load_antenna_config(path)) == 2
    assert len(load_antenna_config("alma.cycle9.3")) == 43


def test_bad_antenna_configs_give_clear_errors(tmp_path):
    with pytest.raises(AntennaConfigError, match="unknown antenna configuration 'alma.cycle99.1.cfg'.*alma.cycle9.3.cfg"):
        load_antenna_config("alma.cycle99.1.cfg")
    bad = tmp_path / "bad.cfg"
    bad.write_text("# coordsys=LOC\n0 0 0 12 P1\n1 two 0 12 P2\n")
    with pytest.raises(AntennaConfigError, match=r"bad.cfg, line 3"):
        load_antenna_config(bad)
    single = tmp_path / "single.cfg"
    single.write_text("0 0 0 12 P1\n")
    with pytest.raises(AntennaConfigError, match="at least 2 antennas"):
        load_antenna_config(single)


def test_uv_coverage_earth_rotation_and_frequency_scaling():
    cfg = ObservationConfig(duration_s=600.0)
    uvw = uv_coverage(cfg)
    assert uvw.shape == (60 * 43 * 42 // 2, 3)
    # Earth rotation moves the uv points: the same baseline differs between first and last integration.
    n_base = 43 * 42 // 2
    assert np.abs(uvw[:n_base] - uvw[-n_base:]).max() > 1.0
    # Baseline lengths in the uv plane are bounded by the array's physical ones.
    ants = load_antenna_config(cfg.antenna_config)
    span = np.hypot(np.ptp(ants["x"].value), np.ptp(ants["y"].value))
    assert np.hypot(uvw[:, 0], uvw[:, 1]).max() <= span * 1.01
    np.testing.assert_allclose(uv_coverage(cfg, 460e9), uv_coverage(cfg, 230e9) * 2)


def test_beam_peaks_at_centre_and_shrinks_with_frequency():
    cfg = ObservationConfig()
    beam = dirty_beam(cfg, (128, 128))
    assert beam.max() == 1.0 and beam[64, 64] == 1.0
    low, high = fit_beam(dirty_beam(cfg, (128, 128), 200e9)), fit_beam(dirty_beam(cfg, (128, 128), 260e9))
    assert high[0] < low[0] and high[1] < low[1]
    assert high[0] / low[0] == pytest.approx(200 / 260, rel=0.05)


def test_dirty_cube_of_a_point_source_is_the_beam():
    # Without noise and primary beam, a one-pixel source gives the dirty beam, scaled by its flux.
    cfg = ObservationConfig(noise=False, primary_beam=False)
    sky_point = one_source(x=32.0, y=32.0, fwhm_x=0.05, fwhm_y=0.05, peak_jy_per_pix=1.0)
    cube = simulate_cube(sky_point, shape=SMALL, config=cfg)
    mid = SMALL[0] // 2
    flux = cube.sky[mid].sum()
    np.testing.assert_allclose(cube.dirty[mid] / flux, cube.beam, atol=2e-5)


def test_noise_level_matches_expectation_and_is_beam_correlated():
    cfg = ObservationConfig()
    cube = simulate_cube(one_source(peak_jy_per_pix=1e-12), shape=(16, 128, 128), config=cfg, seed=3)
    measured = cube.dirty.std()
    assert measured == pytest.approx(cube.noise_rms, rel=0.05)
    # Neighbouring pixels are correlated (the noise went through the beam), white noise would not be.
    img = cube.dirty[0] - cube.dirty[0].mean()
    corr = (img[:, 1:] * img[:, :-1]).mean() / img.var()
    assert corr > 0.5
    # The visibility noise follows the radiometer equation: it scales with Tsys / sqrt(dnu dt).
    wide = cfg.replace(channel_width_hz=40e6)
    assert visibility_noise(wide, [230e9])[0] == pytest.approx(visibility_noise(cfg, [230e9])[0] / 2, rel=1e-6)
    assert 60 < system_temperature(230e9, 0.8, 80) < system_temperature(230e9, 3.0, 40)


def test_noise_level_can_vary_with_frequency():
    tsys = np.full(SMALL[0], 80.0)
    tsys[3] = 240.0  # an atmospheric line in channel 3
    cube = simulate_cube(one_source(peak_jy_per_pix=1e-12), shape=SMALL, config=ObservationConfig(tsys_k=list(tsys)))
    rms = cube.noise_rms_per_channel
    assert rms[3] == pytest.approx(3 * rms[2], rel=1e-3)
    assert cube.dirty[3].std() > 2 * cube.dirty[2].std()
    with pytest.raises(ValueError, match="tsys_k has 2 values for 16 channels"):
        simulate_cube(one_source(), shape=SMALL, config=ObservationConfig(tsys_k=(80.0, 90.0)))


def test_truth_table_contract_and_bounding_boxes():
    cube = simulate_cube(one_source(), shape=SMALL, seed=1)
    for col in ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z", "flux", "peak_jy_per_pix", "snr",
                "x0", "x1", "y0", "y1", "z0", "z1"):
        assert col in cube.truth.colnames
    row = cube.truth[0]
    assert row["x0"] <= row["x"] < row["x1"] and row["y0"] <= row["y"] < row["y1"] and row["z0"] <= row["z"] < row["z1"]
    inside = cube.sky[row["z0"]:row["z1"], row["y0"]:row["y1"], row["x0"]:row["x1"]].sum()
    assert inside / cube.sky.sum() > 0.97
    sigma = 5.0 / 2.3548, 3.0 / 2.3548
    assert row["flux"] == pytest.approx(1e-3 * 2 * np.pi * sigma[0] * sigma[1], rel=1e-3)
    assert row["snr"] > 5
    assert cube.dirty.dtype == np.float32 and cube.sky.dtype == np.float32 and cube.beam.shape == SMALL[1:]


def test_continuum_follows_its_spectral_index():
    src = one_source(peak_jy_per_pix=0.0, continuum_jy=1e-3, spectral_index=3.0)
    cfg = ObservationConfig(channel_width_hz=1e9, noise=False)
    cube = simulate_cube(src, shape=SMALL, config=cfg)
    freqs = cfg.frequencies(SMALL[0])
    spectrum = cube.sky.sum(axis=(1, 2))
    np.testing.assert_allclose(spectrum / spectrum[SMALL[0] // 2], (freqs / freqs[SMALL[0] // 2]) ** 3, rtol=1e-4)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(x=70.0), "outside the cube"),
        (dict(z=-1.0), "outside the cube"),
        (dict(fwhm_x=0.0), "fwhm_x <= 0"),
        (dict(fwhm_z=-2.0), "fwhm_z <= 0"),
        (dict(x=np.nan), "NaN"),
    ],
)
def test_bad_sources_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        simulate_cube(one_source(**changes), shape=SMALL)


def test_bad_shapes_and_configs_are_refused():
    with pytest.raises(ValueError, match="lacks column"):
        simulate_cube(Table(dict(x=[1.0])), shape=SMALL)
    with pytest.raises(ValueError, match="out of range"):
        simulate_cube(one_source(), shape=(0, 64, 64))
    with pytest.raises(ValueError, match="out of range: duration_s"):
        ObservationConfig(duration_s=0)
    with pytest.raises(ValueError, match="below the horizon"):
        uv_coverage(ObservationConfig(dec_deg=80.0))
    with pytest.raises(ValueError, match="outside the uv grid"):
        simulate_cube(one_source(), shape=SMALL, config=ObservationConfig(cell_arcsec=2.0))


def test_fits_round_trip_with_spectral_wcs(tmp_path):
    cube = random_cube(4, shape=(64, 64, 64))
    paths = cube.to_fits(tmp_path / "c")
    assert all(p.exists() for p in paths)
    back = SimulatedCube.from_fits(tmp_path / "c")
    np.testing.assert_array_equal(back.dirty, cube.dirty)
    np.testing.assert_array_equal(back.sky, cube.sky)
    assert len(back.truth) == len(cube.truth) and back.noise_rms == pytest.approx(cube.noise_rms)
    np.testing.assert_allclose(back.noise_rms_per_channel, cube.noise_rms_per_channel, rtol=1e-6)
    header = fits.getheader(tmp_path / "c_dirty.fits")
    assert header["BUNIT"] == "Jy/beam" and fits.getheader(tmp_path / "c_sky.fits")["BUNIT"] == "Jy/pixel"
    wcs = WCS(header)
    assert wcs.wcs.ctype[2] == "FREQ" and wcs.wcs.ctype[0] == "RA---SIN"
    freq = wcs.spectral.pixel_to_world([0, 32]).to_value("Hz")
    np.testing.assert_allclose(freq, [229.68e9, 230e9])
    assert header["BMAJ"] * 3600 == pytest.approx(fit_beam(cube.beam)[0] * 0.1)
    with pytest.raises(FileExistsError):
        cube.to_fits(tmp_path / "c")


def test_a_fits_that_is_not_a_cube_is_refused(tmp_path):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(path)
    with pytest.raises(ValueError, match=r"image.fits: not a data cube"):
        read_cube(path)
    junk = tmp_path / "junk.fits"
    junk.write_text("not fits")
    with pytest.raises(ValueError, match="junk.fits"):
        read_cube(junk)


def test_random_cube_is_deterministic_and_has_a_central_source():
    a, b, c = (random_cube(s, shape=SMALL) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.dirty, b.dirty)
    assert not np.array_equal(a.dirty, c.dirty)
    assert abs(a.truth["x"][0] - 31.5) <= 2 and abs(a.truth["y"][0] - 31.5) <= 2


def test_a_faint_random_cube_keeps_the_sky_and_noise_and_scales_each_source_into_the_snr_range():
    drawn, faint = random_cube(7, shape=SMALL), random_cube(7, shape=SMALL, peak_snr=(3, 6))
    for name in ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z"):
        np.testing.assert_array_equal(drawn.truth[name], faint.truth[name])
    snr = np.asarray(faint.truth["snr"], float)
    assert ((snr >= 3 - 1e-9) & (snr <= 6 + 1e-9)).all() and not np.allclose(snr, drawn.truth["snr"])
    assert faint.truth.meta["seed"] == drawn.truth.meta["seed"]  # the same noise draw
    with pytest.raises(ValueError, match="peak_snr"):
        random_cube(7, shape=SMALL, peak_snr=(6, 3))


def test_make_dataset_is_deterministic_resumable_and_split_by_cube(tmp_path):
    kw = dict(shape=(8, 32, 32), shard_size=3, progress=False)
    m1 = make_dataset(10, tmp_path / "a", seed=5, workers=1, **kw)
    m2 = make_dataset(10, tmp_path / "b", seed=5, workers=2, **kw)
    assert m1["complete"] and m1["peak_memory_mb"] > 0
    cubes = [set(s["cubes"]) for s in m1["shards"]]
    assert set().union(*cubes) == set(range(10)) and sum(map(len, cubes)) == 10
    assert {s["split"] for s in m1["shards"]} == {"train", "val", "test"}
    for shard in m1["shards"]:
        a, b = load_shard(tmp_path / "a", shard["file"]), load_shard(tmp_path / "b", shard["file"])
        np.testing.assert_array_equal(a["dirty"], b["dirty"])
        assert set(a["truth"]["cube"]) <= set(shard["cubes"])
    first = m1["shards"][0]["file"]
    before = load_shard(tmp_path / "a", first)["dirty"]
    (tmp_path / "a" / first).unlink()
    (tmp_path / "a" / m1["shards"][1]["file"]).write_bytes(b"truncated")
    make_dataset(10, tmp_path / "a", seed=5, workers=1, **kw)
    np.testing.assert_array_equal(load_shard(tmp_path / "a", first)["dirty"], before)
    assert read_manifest(tmp_path / "a")["complete"]
    with pytest.raises(ValueError, match="other parameters"):
        make_dataset(10, tmp_path / "a", seed=6, workers=1, **kw)


def test_cli_simulate(tmp_path, capsys):
    from mlsky.cli import main

    out = tmp_path / "set"
    rc = main(["alma", "simulate", "--n", "2", "--out", str(out), "--seed", "1", "--shape", "8", "32", "32",
               "--workers", "1", "--quiet"])
    assert rc == 0 and json.loads((out / "manifest.json").read_text())["params"]["n"] == 2
    assert main(["alma", "simulate", "--n", "2", "--out", str(tmp_path / "x"), "--config", "nope.cfg", "--quiet"]) == 2
    assert "unknown antenna configuration" in capsys.readouterr().err


def test_agrees_with_casa_within_15_percent(data_dir):
    from mlsky.alma.sim.casa import compare_simulator_with_casa, load_casa_reference

    ref = load_casa_reference("casa_1001")
    assert ref.dirty.shape == (64, 128, 128) and len(ref.truth) == 5
    meta = json.loads((data_dir / "alma_casa_reference" / "casa_1001_truth.json").read_text())
    assert ref.truth["fwhm_x"][0] == pytest.approx(meta["sources"][0]["sigma_x"] * 2.35482, rel=1e-4)
    table = compare_simulator_with_casa(["casa_1000", "casa_1003"])
    assert len(table) == 2
    for col in ("bmaj_ratio", "bmin_ratio", "corr_len_ratio", "rms_ratio", "rms_ratio_min", "rms_ratio_max"):
        assert np.all(np.abs(table[col] - 1) <= 0.15), (col, list(table[col]))
    assert table["within_15pct"].all()
    # Same signal too: CASA's dirty cube minus our noise-free one is noise.
    assert np.all(np.abs(table["signal_slope"] - 1) < 0.1)
    assert np.all(np.abs(table["residual_over_noise"] - 1) < 0.1)


def test_overview_figure_and_casa_loader_errors(data_dir):
    import matplotlib

    matplotlib.use("Agg")
    from mlsky.alma.sim.casa import casa_reference_names, load_casa_reference
    from mlsky.alma.sim.plot import plot_cube_overview

    assert casa_reference_names()[:2] == ["casa_1000", "casa_1001"]
    with pytest.raises(KeyError, match="available: casa_1000"):
        load_casa_reference("casa_9999")
    fig = plot_cube_overview(load_casa_reference(1002))
    assert len(fig.axes) >= 4


def test_casa_cubes_are_read_from_another_folder(data_dir, tmp_path):
    import shutil

    from mlsky.alma.sim.casa import casa_reference_names, load_casa_reference
    from mlsky.data import locate

    # A folder of cubes made like the reference ones (benchmarks/alma_casa_cubes.py): only a
    # cube with its truth file counts.
    for suffix in ("dirty.fits", "sky.fits", "psf.fits", "truth.json"):
        shutil.copy(locate("alma_casa_reference") / f"casa_1003_{suffix}", tmp_path / f"casa_7_{suffix}")
    shutil.copy(locate("alma_casa_reference") / "casa_1004_sky.fits", tmp_path / "casa_8_sky.fits")
    assert casa_reference_names(tmp_path) == ["casa_7"]
    cube = load_casa_reference(7, tmp_path)
    np.testing.assert_array_equal(cube.dirty, load_casa_reference(1003).dirty)
    assert cube.truth.meta["name"] == "casa_7"
    with pytest.raises(KeyError, match=f"no CASA cube 'casa_8' in {tmp_path}; available: casa_7"):
        load_casa_reference(8, tmp_path)
