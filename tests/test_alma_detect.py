"""Reading cubes, scoring catalogues, the classical peers and the whole pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mlsky.alma.finder import CubeError, as_cube, detect, write_catalogue
from mlsky.alma.finder.inputs import emission_ranges, probability_map, sampled_noise, tiles
from mlsky.alma.metrics import (
    angle_difference,
    box_iou_3d,
    detection_scores,
    evaluate,
    flux_error_vs_snr,
    match,
    parameter_pulls,
    parameter_residuals,
)
from mlsky.alma.peers import BlobcatFinder, PhotutilsFinder, SofiaFinder, reliability
from mlsky.alma.finder.pipeline import PipelineConfig
from mlsky.alma.finder.train import TrainingPlan, train_pipeline
from mlsky.alma.sim.simulate import random_cube, simulate_cube

SHAPE = (16, 48, 48)


def bright_cube(seed=1, shape=SHAPE, **overrides):
    """Two bright, well separated sources (SNR well above 10)."""
    src = dict(x=[14.0, 34.0], y=[30.0, 12.0], z=[5.0, 10.0], fwhm_x=[3.0, 2.0], fwhm_y=[2.0, 2.0],
               pa_deg=[30.0, 0.0], fwhm_z=[3.0, 2.5], peak_jy_per_pix=[2e-3, 3e-3])
    src.update(overrides)
    return simulate_cube(Table(src), shape=shape, seed=seed)


# --- reading cubes ------------------------------------------------------------------------


def test_as_cube_reads_a_simulated_cube_and_its_fits(tmp_path):
    sim = bright_cube()
    cube = as_cube(sim)
    assert cube.data.shape == SHAPE
    assert cube.pixel_scale_arcsec == pytest.approx(0.1)
    assert cube.channel_width_hz == pytest.approx(10e6)
    assert np.all(cube.noise > 0)
    [dirty_path, *_] = sim.to_fits(tmp_path / "sim")
    again = as_cube(dirty_path)
    np.testing.assert_array_equal(again.data, cube.data)
    assert 20 < cube.beam_area_pix < 200


def test_as_cube_drops_a_degenerate_stokes_axis():
    sim = bright_cube()
    header = sim.header.copy()
    header["NAXIS"], header["WCSAXES"] = 4, 4
    header["CTYPE4"], header["CRVAL4"], header["CDELT4"], header["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    cube = as_cube((sim.dirty[None], header))
    assert cube.data.shape == SHAPE


def test_as_cube_rejects_bad_cubes(tmp_path):
    sim = bright_cube()
    with pytest.raises(CubeError, match="needs 3 axes.*got 2"):
        as_cube((sim.dirty[0], sim.header))
    velo = sim.header.copy()
    velo["CTYPE3"], velo["CUNIT3"], velo["CRVAL3"], velo["CDELT3"] = "VRAD", "m/s", 0.0, 1000.0
    with pytest.raises(CubeError, match="'VRAD' is not frequency"):
        as_cube((sim.dirty, velo))
    flat = sim.header.copy()
    flat["CTYPE3"] = "LINEAR"
    with pytest.raises(CubeError, match="no spectral axis"):
        as_cube((sim.dirty, flat))
    with pytest.raises(CubeError, match="every value is NaN"):
        as_cube((np.full(SHAPE, np.nan, np.float32), sim.header))
    with pytest.raises(CubeError, match="noise is zero"):
        as_cube((np.ones(SHAPE, np.float32), sim.header))
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  = garbage")
    with pytest.raises(CubeError, match="broken.fits"):
        as_cube(broken)
    with pytest.raises(FileNotFoundError):
        as_cube(tmp_path / "missing.fits")


def test_nan_blanked_edges_count_as_empty_sky():
    sim = bright_cube()
    data = sim.dirty.copy()
    data[:, :, :5] = np.nan
    cube = as_cube((data, sim.header))
    assert cube.blank[:, :5].all() and not cube.blank[:, 5:].any()
    assert np.isfinite(cube.data).all()
    found = SofiaFinder(threshold=5.0, reliability=0.0).predict(cube)
    assert len(found) >= 2


# --- metrics ------------------------------------------------------------------------------


def _table(rows, beam_fwhm_pix=5.0):
    """A truth table or catalogue of boxes, with a line FWHM of 4 channels and the beam in meta."""
    names = ("x", "y", "z", "x0", "x1", "y0", "y1", "z0", "z1")
    table = Table(rows=rows, names=names) if rows else Table(names=names)
    table["fwhm_z"] = np.full(len(table), 4.0)
    table.meta["beam_fwhm_pix"] = beam_fwhm_pix
    return table


def test_box_iou_3d():
    a = np.array([[0, 2, 0, 2, 0, 2]])
    b = np.array([[1, 3, 0, 2, 0, 2], [5, 6, 5, 6, 5, 6]])
    np.testing.assert_allclose(box_iou_3d(a, b), [[4 / 12, 0.0]])


def test_matching_counts_tp_fp_fn():
    truth = _table([(5, 5, 5, 3, 8, 3, 8, 3, 8), (20, 20, 5, 18, 23, 18, 23, 3, 8)])
    found = _table([(5.5, 5, 5, 3, 8, 3, 8, 3, 8), (40, 40, 5, 38, 43, 38, 43, 3, 8)])
    s = detection_scores(truth, found)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["precision"] == s["recall"] == s["f1"] == 0.5
    assert s["mean_iou"] == 1.0
    # One detection cannot match two sources.
    both = _table([(5, 5, 5, 0, 30, 0, 30, 0, 10)])
    assert len(match(truth, both)) == 1
    # Box matching (the paper's) accepts an offset that the strict match does not.
    off = _table([(8.5, 5, 5, 4, 13, 3, 8, 3, 8)])  # 3.5 px off: beyond 0.6 x 5 px
    assert detection_scores(truth, off)["tp"] == 0
    assert detection_scores(truth, off, criterion="box")["tp"] == 1
    assert detection_scores(truth, off, tolerance_beams=0.8)["tp"] == 1
    # Spectrally: within max(2, 2 sigma_z) = 3.4 channels of the line, not beyond.
    assert detection_scores(truth, _table([(5, 5, 8.3, 3, 8, 3, 8, 3, 8)]))["tp"] == 1
    assert detection_scores(truth, _table([(5, 5, 8.6, 3, 8, 3, 8, 3, 8)]))["tp"] == 0
    empty = detection_scores(truth, _table([]))
    assert (empty["tp"], empty["fn"], empty["precision"], empty["recall"]) == (0, 2, 1.0, 0.0)


def test_residuals_and_flux_error_tables():
    truth = _table([(5, 5, 5, 3, 8, 3, 8, 3, 8)])
    truth["flux"], truth["pa_deg"], truth["snr"] = [1e-3], [179.0], [8.0]
    found = _table([(6, 5, 5, 3, 8, 3, 8, 3, 8)])
    found["flux"], found["pa_deg"] = [0.5e-3], [1.0]
    scores, pairs = evaluate([truth], [found])
    res = parameter_residuals(pairs)
    row = {r["parameter"]: r for r in res}
    assert row["x"]["mean"] == pytest.approx(-1.0)
    assert row["flux"]["mean"] == pytest.approx(0.5)  # mJy
    assert row["pa_deg"]["mean"] == pytest.approx(-2.0)  # wrapped, not 178
    table = flux_error_vs_snr(pairs, edges=(0, 5, 10))
    assert list(table["n"]) == [0, 1] and table["mean_rel_error"][1] == pytest.approx(-0.5)
    np.testing.assert_allclose(angle_difference([179.0, 10.0], [1.0, 20.0]), [-2.0, -10.0])
    assert {r["parameter"]: r["n"] for r in parameter_residuals(pairs, min_snr=10)}["x"] == 0  # SNR 8 is cut
    assert {r["parameter"]: r["n"] for r in parameter_residuals(pairs, min_snr=5)}["x"] == 1
    assert len(parameter_pulls(pairs)) == 0  # no error columns, no pulls
    found["err_x"], found["err_flux"], found["err_pa_deg"] = [0.5], [1e-4], [4.0]
    _, pairs = evaluate([truth], [found])
    pulls = {r["parameter"]: r for r in parameter_pulls(pairs)}
    assert set(pulls) == {"x", "flux", "pa_deg"}
    assert pulls["x"]["mean"] == pytest.approx(2.0) and pulls["flux"]["mean"] == pytest.approx(-5.0)
    assert pulls["pa_deg"]["mean"] == pytest.approx(0.5)  # wrapped: 2 deg, not 178
    assert pulls["x"]["within_1"] == 0.0


def test_position_angle_residuals_skip_round_sources():
    truth = _table([(5, 5, 5, 3, 8, 3, 8, 3, 8), (30, 30, 5, 28, 32, 28, 32, 3, 8)])
    truth["fwhm_x"], truth["fwhm_y"], truth["pa_deg"] = [4.0, 3.0], [2.0, 2.9], [10.0, 50.0]
    found = truth.copy()
    found["pa_deg"] = [12.0, 140.0]
    _, pairs = evaluate([truth], [found])
    every = {r["parameter"]: r for r in parameter_residuals(pairs)}["pa_deg"]
    elongated = {r["parameter"]: r for r in parameter_residuals(pairs, min_axis_ratio_pa=1.5)}["pa_deg"]
    assert every["n"] == 2 and elongated["n"] == 1 and elongated["mean"] == pytest.approx(-2.0)


# --- peers --------------------------------------------------------------------------------


@pytest.mark.parametrize("finder", [BlobcatFinder(seed_sigma=6.0), SofiaFinder(threshold=5.0),
                                    PhotutilsFinder(nsigma=4.0)])
def test_peers_find_two_bright_sources(finder):
    sim = bright_cube()
    found = finder.predict(sim)
    scores = detection_scores(sim.truth, found)
    assert scores["tp"] == 2, found
    assert {"ra", "dec", "freq", "flux", "fwhm_x", "pa_deg", "deblend"} <= set(found.colnames)
    assert found["freq"].unit == "GHz"


def test_peers_find_nothing_in_pure_noise():
    sim = bright_cube(peak_jy_per_pix=[1e-9, 1e-9])
    for finder in (BlobcatFinder(seed_sigma=6.0, min_voxels=10), SofiaFinder(threshold=5.5, min_voxels=20)):
        assert len(finder.predict(sim)) <= 1


def test_peer_tuning_picks_the_best_grid_point():
    cubes = [bright_cube(seed=s) for s in range(2)]
    finder = BlobcatFinder().fit(cubes, param_grid={"seed_sigma": [3.0, 6.0], "flood_sigma": [2.6], "min_voxels": [1]})
    assert finder.best_params_["seed_sigma"] == 6.0
    assert finder.best_score_["f1"] == max(finder.scan_["f1"])
    with pytest.raises(ValueError, match="no parameter 'threshold'"):
        finder.set_params(threshold=3.0)


def test_reliability_drops_sources_where_negatives_are_as_dense():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, size=(200, 2))
    positives = np.vstack([rng.normal(0, 0.1, size=(200, 2)), [[3.0, 3.0]]])
    r = reliability(positives, noise)
    assert r[-1] > 0.9
    assert np.median(r[:-1]) < 0.3
    assert np.all(reliability(positives, noise[:2]) == 1)


# --- the pipeline -------------------------------------------------------------------------


def test_helpers_of_the_pipeline():
    assert tiles(64, 64) == [0]
    starts = tiles(150, 64)
    assert starts[0] == 0 and starts[-1] == 150 - 64 and all(b - a <= 48 for a, b in zip(starts, starts[1:]))
    prob = np.array([0, 0.9, 0.9, 0, 0.8, 0, 0, 0, 0.9, 0.9, 0.9, 0])
    assert emission_ranges(prob) == [(1, 5), (8, 11)]
    assert emission_ranges(prob, min_channels=4) == [(1, 5)]


def _tiny_pipeline(out, **model):
    from mlsky.alma.sim.simulate import random_cube

    plan = TrainingPlan(shape=(16, 32, 32), n_train=12, n_val=3, input_size=32, cutout=16, resnet_width=2,
                        gru_hidden=4, epochs_blobs=1, epochs_gru=1, epochs_resnet=1, batch_size=4, **model)
    cubes = [random_cube(s, shape=plan.shape) for s in range(15)]
    return out, train_pipeline(out, plan=plan, train_cubes=cubes[:12], val_cubes=cubes[12:], progress=False)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """The paper's pipeline trained for seconds on 12 small cubes: enough to run, not to be good."""
    return _tiny_pipeline(tmp_path_factory.mktemp("weights"), blobs_model="blobs_finder", filter_widths=(),
                          battery=True)


@pytest.fixture(scope="module")
def tiny_fcn_weights(tmp_path_factory):
    """The fully convolutional finder on matched-filtered images, trained for seconds."""
    return _tiny_pipeline(tmp_path_factory.mktemp("weights_fcn"), blobs_width=2)


def test_fcn_pipeline_trains_without_battery_and_detects(tiny_fcn_weights):
    out, history = tiny_fcn_weights
    names = {p.name for p in out.iterdir()}
    assert {"pipeline.json", "blobs_finder.pt", "deep_gru.pt"} <= names and "resnet_flux.pt" not in names
    config = PipelineConfig.read(out)
    assert config.blobs_model == "blobs_finder_fcn" and config.filter_widths == [1, 2, 4, 8, 16]
    catalogue = detect(bright_cube(shape=(12, 40, 72), x=[14.0, 30.0], y=[20.0, 10.0]), weights=out)
    assert np.all((catalogue["x"] >= 0) & (catalogue["x"] < 72))


def test_fcn_reads_a_long_cube_in_windows_of_its_training_band(tiny_fcn_weights):
    """A cube longer than the training cubes is read in windows of their length: the map is the
    largest of the windows' maps, and a cube no longer than one window is read whole."""
    from mlsky.alma.finder import AlmaSourceFinder

    out, _ = tiny_fcn_weights
    finder = AlmaSourceFinder(out).load()
    span = finder.config_.channels
    assert span == 16  # the training cubes' channels, written by train_pipeline
    long = as_cube(bright_cube(shape=(40, 40, 40), x=[14.0, 30.0], y=[20.0, 10.0], z=[5.0, 33.0]))
    windows = [finder.probability(long.channels(z, z + span)) for z in tiles(40, span)]
    np.testing.assert_array_equal(finder.probability(long), np.max(windows, axis=0))
    short = long.channels(0, span)
    finder.config_.channels = 0
    whole = finder.probability(short)
    finder.config_.channels = span
    np.testing.assert_array_equal(finder.probability(short), whole)


def test_cube_channels_slices_data_noise_and_spectral_axis():
    cube = as_cube(bright_cube())
    part = cube.channels(3, 9)
    assert part.data.shape == (6, *cube.data.shape[1:]) and len(part.noise) == 6
    np.testing.assert_array_equal(part.data, cube.data[3:9])
    np.testing.assert_allclose(part.wcs.spectral.pixel_to_world_values(0), cube.wcs.spectral.pixel_to_world_values(3))


def test_snr_of_is_the_slice_of_snr():
    cube = as_cube(bright_cube())
    used = np.array([2, 5, 6])
    np.testing.assert_array_equal(cube.snr_of(slice(3, 9), slice(4, 20), slice(1, 7)), cube.snr[3:9, 4:20, 1:7])
    np.testing.assert_array_equal(cube.snr_of(used, slice(4, 20)), cube.snr[used, 4:20])


def test_sampled_noise_is_the_robust_rms_of_every_voxel_within_half_a_percent():
    from astropy.stats import mad_std
    from scipy import ndimage

    # Noise correlated along every axis, as a dirty cube's after the matched filter.
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.normal(size=(64, 256, 256)).astype(np.float32), (3, 2, 2))
    assert abs(sampled_noise(noise) / mad_std(noise) - 1) < 0.005
    assert sampled_noise(noise[:4, :16, :16]) == pytest.approx(mad_std(noise[:4, :16, :16]), rel=1e-6)


def test_pipeline_json_with_unknown_or_missing_keys_is_refused(tiny_fcn_weights, tmp_path):
    import json
    import shutil

    out, _ = tiny_fcn_weights
    raw = json.loads((out / "pipeline.json").read_text())
    for broken in ({**raw, "surprise": 1}, {k: v for k, v in raw.items() if k != "cutout"}):
        shutil.copytree(out, tmp_path / "w", dirs_exist_ok=True)
        (tmp_path / "w" / "pipeline.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="pipeline.json: unknown key.*missing key"):
            PipelineConfig.read(tmp_path / "w")


def test_train_pipeline_writes_checkpoints_and_curves(tiny_weights):
    out, history = tiny_weights
    names = {p.name for p in out.iterdir()}
    assert {"pipeline.json", "blobs_finder.pt", "deep_gru.pt", "resnet_flux.pt", "resnet_pa.pt"} <= names
    assert not any(n.endswith(".part") for n in names)
    for key in ("blobs_finder", "deep_gru", "resnet_flux"):
        assert len(history[key]["train"]) == 1 and len(history[key]["val"]) == 1
    assert len(history["thresholds"]) > 1


@pytest.mark.parametrize("shape", [(16, 32, 32), (12, 40, 72)])
def test_detect_runs_on_any_cube_size(tiny_weights, shape):
    out, _ = tiny_weights
    catalogue = detect(bright_cube(shape=shape, x=[14.0, 30.0], y=[20.0, 10.0]), weights=out)
    assert set(catalogue.colnames) >= {"x", "y", "z", "ra", "dec", "freq", "x0", "z1", "fwhm_x", "pa_deg", "flux",
                                       "deblend"}
    assert np.all((catalogue["x"] >= 0) & (catalogue["x"] < shape[2]))


def test_detect_resamples_another_pixel_scale(tiny_weights):
    out, _ = tiny_weights
    sim = bright_cube(shape=(16, 32, 32), x=[10.0, 22.0], y=[12.0, 20.0])
    header = sim.header.copy()
    header["CDELT1"], header["CDELT2"] = header["CDELT1"] * 0.5, header["CDELT2"] * 0.5
    catalogue = detect((sim.dirty, header), weights=out)
    assert np.all(catalogue["x"] < 32)
    if len(catalogue):
        from astropy.wcs import WCS

        ra, dec, _ = WCS(header).pixel_to_world_values(catalogue["x"], catalogue["y"], catalogue["z"])
        np.testing.assert_allclose(catalogue["ra"].value, ra)
        np.testing.assert_allclose(catalogue["dec"].value, dec)


def test_probability_map_tiles_large_images(tiny_weights):
    from mlsky.alma.finder.models.checkpoint import load_checkpoint

    out, _ = tiny_weights
    net, _ = load_checkpoint(out / "blobs_finder.pt", "blobs_finder")
    prob = probability_map(net, np.zeros((40, 90), np.float32))
    assert prob.shape == (40, 90) and np.all((prob >= 0) & (prob <= 1))


def test_tiled_map_matches_the_untiled_map_of_its_tile(tiny_weights):
    """A blob in a large image (tiled) gets the map it gets in its own tile-sized image (untiled).

    The image is placed at the last tile's offset, with its blob beyond the reach of every other
    tile: stitching at a wrong offset, or padding where none is needed, changes the map there.
    """
    from mlsky.alma.finder.models.checkpoint import load_checkpoint

    out, _ = tiny_weights
    net, _ = load_checkpoint(out / "blobs_finder.pt", "blobs_finder")
    n = net.input_size
    size = 2 * n + n // 3
    starts = tiles(size, n)
    last, before = starts[-1], starts[-2]
    yy, xx = np.mgrid[:n, :n]
    c = (before + n - last + n) / 2  # midway between the end of the previous tile and the edge
    tile = (8.0 * np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / 8.0)).astype(np.float32)
    tile += np.random.default_rng(0).normal(0, 1, tile.shape).astype(np.float32)
    large = np.zeros((size, size), np.float32)
    large[last:, last:] = tile
    untiled = probability_map(net, tile)
    tiled = probability_map(net, large)
    alone = slice(before + n - last, None)  # pixels of the last tile that no other tile covers
    np.testing.assert_allclose(tiled[last:, last:][alone, alone], untiled[alone, alone], atol=1e-6)
    assert not np.allclose(untiled[alone, alone], untiled[alone, alone].mean())  # the map has structure


def test_detect_without_weights_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="mlsky alma train"):
        detect(bright_cube(), weights=tmp_path)


def test_cli_detect_writes_a_catalogue_and_nothing_on_error(tiny_weights, tmp_path):
    from mlsky.cli import main

    out, _ = tiny_weights
    [dirty, *_] = bright_cube().to_fits(tmp_path / "c")
    target = tmp_path / "cat.ecsv"
    assert main(["alma", "detect", str(dirty), "-o", str(target), "--weights", str(out)]) == 0
    assert len(Table.read(target)) == len(detect(dirty, weights=out))
    assert main(["alma", "detect", str(dirty), "-o", str(target), "--weights", str(out)]) == 2  # exists
    bad = tmp_path / "flat.fits"
    fits.PrimaryHDU(np.ones((4, 8), np.float32)).writeto(bad)
    assert main(["alma", "detect", str(bad), "-o", str(tmp_path / "none.ecsv"), "--weights", str(out)]) == 2
    assert not (tmp_path / "none.ecsv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_catalogue_is_atomic(tmp_path):
    table = Table({"x": [1.0]})
    write_catalogue(table, tmp_path / "a.ecsv")
    assert Table.read(tmp_path / "a.ecsv")["x"][0] == 1.0


def test_casa_reference_cubes_are_read_and_peers_find_sources(data_dir):
    from mlsky.alma.sim.casa import load_casa_reference

    ref = load_casa_reference("casa_1002")
    cube = as_cube(ref)
    assert cube.data.shape == (64, 128, 128)
    # The CASA noise estimate (first 4 channels) and ours (robust, per channel) agree.
    assert np.median(cube.noise) == pytest.approx(ref.noise_rms, rel=0.15)
    bright = ref.truth[ref.truth["snr"] > 8]
    found = SofiaFinder(threshold=5.0, min_voxels=20, reliability=0.0).predict(cube)
    assert detection_scores(bright, found)["recall"] >= 0.5 if len(bright) else True


def test_compare_finders_and_chance_level():
    from mlsky.alma.metrics import chance_catalogues, compare_finders

    sims = [bright_cube(seed=s) for s in range(2)]
    cubes = [as_cube(s) for s in sims]
    truths = [s.truth for s in sims]
    table, pairs, found = compare_finders({"sofia": SofiaFinder(threshold=5.0).predict}, cubes, truths)
    assert table["tp"][0] == 4 and table["f1"][0] == pytest.approx(1.0)
    assert len(pairs["sofia"]) == 4 and len(found["sofia"]) == 2
    chance, _ = evaluate(truths, chance_catalogues(found["sofia"], [c.data.shape for c in cubes],
                                                   np.random.default_rng(0)))
    assert chance["f1"] < table["f1"][0]



def test_best_other_names_the_strongest_peer_and_the_verdict():
    from astropy.table import Table

    from mlsky.alma.metrics import best_other

    table = Table({"finder": ["ours", "a", "b", "c"], "f1": [0.8, 0.7, 0.75, 0.9], "sdc2": [0.6, 0.1, 0.5, 0.2]})
    assert best_other(table, "ours") == ("c", "below")
    assert best_other(table, "ours", exclude=("c",)) == ("b", "above")
    assert best_other(table, "ours", column="sdc2") == ("b", "above")
    assert best_other(table, "a", exclude=("ours", "c")) == ("b", "below")
    with pytest.raises(ValueError, match="no finder besides"):
        best_other(table, "ours", exclude=("a", "b", "c"))


def test_recall_vs_snr_counts_recovered_sources_per_bin():
    from mlsky.alma.metrics import recall_vs_snr

    truth = _table([(5, 5, 5, 3, 8, 3, 8, 3, 8), (20, 20, 5, 18, 23, 18, 23, 3, 8)])
    truth["snr"] = [2.5, 8.0]
    found = _table([(5.5, 5, 5, 3, 8, 3, 8, 3, 8)])
    _, pairs = evaluate([truth], [found])
    table = recall_vs_snr([truth], {"one": pairs}, edges=(0, 5, 10, 20))
    assert table.colnames == ["finder", "SNR 0-5", "SNR 5-10", "SNR 10-20"]
    assert list(table[0])[1:] == [1.0, 0.0, 0.0]  # the faint one found, the bright one missed, none above
    with pytest.raises(ValueError, match="snr_true"):
        recall_vs_snr([truth], {"bare": Table({"x": [1.0]})})


def test_pipeline_figures(tiny_weights):
    import matplotlib

    matplotlib.use("Agg")
    from mlsky.alma.finder import AlmaSourceFinder
    from mlsky.alma.finder.plot import plot_blobs, plot_residuals, plot_spectra, plot_training_curves

    out, history = tiny_weights
    finder = AlmaSourceFinder(out).load()
    sim = bright_cube(shape=(16, 32, 32), x=[10.0, 22.0], y=[12.0, 20.0])
    assert len(plot_blobs(finder, [sim]).axes) >= 3
    plot_spectra(finder, sim)
    plot_training_curves(history)
    # Kernels no wider than the 10 px gap, so that the two sources stay apart (strict matching).
    _, pairs = evaluate([sim.truth], [SofiaFinder(threshold=5.0, spatial_fwhm=(0, 4)).predict(sim)])
    assert len(pairs) == 2
    plot_residuals(pairs)
    finder.config_.window = 8
    assert finder.probability(as_cube(sim)).shape == (32, 32)


def test_finish_catalogue_maps_a_zoomed_grid_back_to_the_cube():
    from mlsky.alma.finder import finish_catalogue

    cube = as_cube(bright_cube())
    row = dict(x=40.0, y=20.0, z=6.0, fwhm_x=4.0, fwhm_y=2.0, pa_deg=190.0, fwhm_z=2.0, flux=1e-3)
    table = finish_catalogue([row], cube, factors=(1.0, 2.0))
    # Pixel edges aligned: the zoomed grid's pixel 40 is the original's (40 + 0.5) / 2 - 0.5.
    assert (table["x"][0], table["y"][0], table["fwhm_x"][0], table["pa_deg"][0]) == (19.75, 9.75, 2.0, 10.0)
    ra, dec, freq = cube.wcs.pixel_to_world_values(19.75, 9.75, 6.0)
    assert table["ra"][0] == pytest.approx(ra) and table["freq"].quantity.to_value("Hz")[0] == pytest.approx(freq)
    assert table["x0"][0] < 20 < table["x1"][0] and table["z0"][0] < 6 < table["z1"][0]
    assert "err_x" not in table.colnames  # a finder that measured no errors gets no error columns
    errors = dict(err_x=0.4, err_y=0.2, err_z=0.5, err_fwhm_x=0.6, err_fwhm_y=0.8, err_pa_deg=7.0, err_fwhm_z=0.3,
                  err_flux=1e-4)
    table = finish_catalogue([{**row, **errors}], cube, factors=(2.0, 2.0))
    # Errors of positions and sizes shrink with the zoom as the values; the angle's and flux's do not.
    assert [table[c][0] for c in ("err_x", "err_y", "err_z", "err_fwhm_x", "err_pa_deg", "err_fwhm_z", "err_flux")] \
        == pytest.approx([0.2, 0.1, 0.25, 0.3, 7.0, 0.15, 1e-4])
    assert table["err_x"].unit == "pix" and table["err_flux"].unit == "Jy" and table["err_pa_deg"].unit == "deg"


@pytest.mark.parametrize("cell_arcsec, size", [(0.05, 256), (0.15, 86)])
def test_a_cube_with_other_pixels_than_training_gets_its_positions_right(cell_arcsec, size):
    """Resampled onto the training pixels and mapped back, positions must not shift: the data's
    zoom, its WCS and the catalogue once used three pixel conventions (median offsets of -0.49
    and -0.63 px on 0.05" pixels, +0.21 and +0.22 px on 0.15" pixels)."""
    from mlsky.alma.metrics import evaluate
    from mlsky.alma.sim.uv import ObservationConfig

    config = ObservationConfig(cell_arcsec=cell_arcsec)
    cubes = [random_cube(8_700_000 + i, shape=(64, size, size), config=config) for i in range(8)]
    _, pairs = evaluate([c.truth for c in cubes], [detect(c) for c in cubes])
    bright = pairs[pairs["snr_true"] > 5]
    assert len(bright) >= 8
    for axis in ("x", "y"):
        assert abs(np.median(bright[f"{axis}_pred"] - bright[f"{axis}_true"])) <= 0.15, axis
    # The errors are mapped back with the positions: their pulls keep a scale of about 1.
    pulls = parameter_pulls(pairs, min_snr=5)
    for axis in ("x", "y"):
        assert 0.6 <= pulls["std"][list(pulls["parameter"]).index(axis)] <= 1.5, pulls


def test_export_drops_the_optimiser_and_keeps_the_best_weights(tiny_fcn_weights, tmp_path):
    import torch

    from mlsky.alma.finder.ship import export_pipeline

    out, _ = tiny_fcn_weights
    digests = export_pipeline(out, tmp_path / "shipped")
    assert set(digests) == {"pipeline.json", "blobs_finder.pt", "deep_gru.pt"}
    for name in ("blobs_finder.pt", "deep_gru.pt"):
        state = torch.load(tmp_path / "shipped" / name, weights_only=True)
        trained = torch.load(out / name, weights_only=True)
        assert state["optimizer"] is None and trained["optimizer"] is not None
        assert (tmp_path / "shipped" / name).stat().st_size < (out / name).stat().st_size
    a = detect(bright_cube(), weights=out)
    b = detect(bright_cube(), weights=tmp_path / "shipped")
    assert len(a) == len(b) and np.allclose(np.asarray(a["x"]), np.asarray(b["x"]))


@pytest.mark.parametrize("output, message", [("cat.txt", "unknown catalogue format '.txt'"),
                                             ("missing/cat.ecsv", "does not exist"),
                                             ("/sys/c.ecsv", "is not writable")])
def test_cli_detect_checks_its_output_before_any_work(tmp_path, capsys, output, message):
    from mlsky.cli import main

    [dirty, *_] = bright_cube().to_fits(tmp_path / "c")
    # No weights are needed to refuse: the output is checked first.
    target = output if output.startswith("/") else str(tmp_path / output)
    assert main(["alma", "detect", str(dirty), "-o", target, "--weights", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_cli_train_prints_the_thresholds_it_saved(tmp_path, capsys, monkeypatch):
    import re

    from mlsky.alma.finder import train as train_module
    from mlsky.cli import main

    tiny = TrainingPlan(shape=(16, 32, 32), n_train=8, n_val=3, input_size=32, cutout=16, resnet_width=2,
                        gru_hidden=4, epochs_blobs=1, epochs_gru=1, epochs_resnet=1, batch_size=4, blobs_width=2)
    monkeypatch.setattr(train_module, "training_plan", lambda *a, **k: tiny)
    assert main(["alma", "train", "--out", str(tmp_path / "w"), "--quiet"]) == 0
    out = capsys.readouterr().out
    printed = re.search(r"blob threshold ([\d.]+), GRU threshold ([\d.]+)", out)
    saved = PipelineConfig.read(tmp_path / "w")
    assert printed and (float(printed[1]), float(printed[2])) == (saved.blob_threshold, saved.gru_threshold)


def test_catalogues_are_written_with_the_umask(tmp_path):
    import os
    import stat

    from mlsky.alma.io import write_catalogue

    old = os.umask(0o022)
    try:
        path = write_catalogue(Table({"x": [1.0]}), tmp_path / "cat.ecsv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
