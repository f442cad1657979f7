"""Strict matching, the SDC2 score, and the real SoFiA-2 as a peer (run when its binary is found)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mlsky.alma.finder import CATALOGUE_COLUMNS, as_cube
from mlsky.alma.metrics import beam_fwhm_of, catalogue_agreement, evaluate, sdc2_scores
from mlsky.alma.peers import (
    SOFIA_ENV,
    Sofia2Finder,
    SofiaFinder,
    SofiaNotFoundError,
    find_sofia,
    read_sofia_catalogue,
    sofia_agreement,
)
from mlsky.alma.sim.simulate import random_cube, simulate_cube

SHAPE = (32, 64, 64)


def bright_cube(seed=1, **overrides):
    """Two bright, well separated sources with lines wide enough for SoFiA's 5-channel minimum;
    the first elongated (axis ratio 2.5) at a position angle of 30 degrees."""
    src = dict(x=[20.0, 44.0], y=[40.0, 18.0], z=[10.0, 20.0], fwhm_x=[10.0, 3.0], fwhm_y=[4.0, 3.0],
               pa_deg=[30.0, 0.0], fwhm_z=[6.0, 5.0], peak_jy_per_pix=[1.5e-3, 3e-3])
    src.update(overrides)
    return simulate_cube(Table(src), shape=SHAPE, seed=seed)


def noise_cube(seed=3):
    return simulate_cube(Table(dict(x=[32.0], y=[32.0], z=[16.0], fwhm_x=[3.0], fwhm_y=[3.0], pa_deg=[0.0],
                                    fwhm_z=[4.0], peak_jy_per_pix=[0.0])), shape=SHAPE, seed=seed)


@pytest.fixture(scope="module")
def sofia():
    """The SoFiA-2 binary; the tests that run it are skipped without one."""
    try:
        return find_sofia()
    except SofiaNotFoundError as err:
        pytest.skip(f"SoFiA-2 binary not found ({err}); CI builds it with ../shared/tools/build-sofia2.sh")


# --- the beam and the SDC2 score ------------------------------------------------------------


def test_beam_fwhm_from_header_cube_and_truth_agree():
    sim = bright_cube()
    from_header = beam_fwhm_of(sim)  # BMAJ/BMIN through radio_beam
    assert 3.0 < from_header < 10.0
    assert beam_fwhm_of(as_cube(sim)) == pytest.approx(from_header, rel=1e-6)
    assert beam_fwhm_of(sim.truth) == pytest.approx(from_header, rel=1e-6)
    with pytest.raises(ValueError, match="beam_fwhm_pix"):
        beam_fwhm_of(Table({"x": [1.0]}))


def _truth():
    t = Table(dict(x=[10.0, 40.0], y=[10.0, 40.0], z=[10.0, 20.0], fwhm_x=[6.0, 3.0], fwhm_y=[3.0, 3.0],
                   pa_deg=[30.0, 0.0], fwhm_z=[6.0, 4.0], flux=[1e-3, 2e-3]))
    t.meta["beam_fwhm_pix"] = 5.0
    return t


def test_sdc2_score_is_one_per_perfect_match_minus_one_per_false_detection():
    truth = _truth()
    perfect, _ = evaluate([truth], [truth.copy()])
    assert perfect["sdc2_score"] == pytest.approx(2.0) and perfect["sdc2_per_source"] == pytest.approx(1.0)
    # A detection's axes may be listed the other way round: same ellipse, same score.
    swapped = truth.copy()
    swapped["fwhm_x"], swapped["fwhm_y"], swapped["pa_deg"] = [3.0, 3.0], [6.0, 3.0], [120.0, 0.0]
    assert evaluate([truth], [swapped])[0]["sdc2_score"] == pytest.approx(2.0)
    # A false detection costs 1; a missed source costs nothing but recall.
    extra = truth.copy()
    extra.add_row(dict(x=60.0, y=5.0, z=5.0, fwhm_x=3.0, fwhm_y=3.0, pa_deg=0.0, fwhm_z=4.0, flux=1e-3))
    assert evaluate([truth], [extra])[0]["sdc2_score"] == pytest.approx(1.0)
    assert evaluate([truth], [truth[:1]])[0]["sdc2_score"] == pytest.approx(1.0)


def test_sdc2_sub_scores_follow_the_thresholds():
    truth = _truth()
    off = truth.copy()
    off["flux"] = truth["flux"] * 1.2  # 20% off: threshold 0.1 -> 0.5
    off["fwhm_z"] = truth["fwhm_z"] * 1.6  # 60% off: threshold 0.3 -> 0.5
    off["pa_deg"] = [50.0, 0.0]  # 20 degrees off: threshold 10 -> 0.5 (round source: PA moot, 0 off)
    _, pairs = evaluate([truth], [off])
    np.testing.assert_allclose(pairs["sdc2_flux"], [0.5, 0.5])
    np.testing.assert_allclose(pairs["sdc2_line_width"], [0.5, 0.5])
    np.testing.assert_allclose(pairs["sdc2_pa"], [0.5, 1.0])
    np.testing.assert_allclose(pairs["sdc2_position"], [1.0, 1.0])
    np.testing.assert_allclose(pairs["sdc2"], [(3 + 1.5) / 6, (3 + 1 + 1) / 6])
    # A catalogue that measures nothing but positions earns only the position and frequency points.
    bare = sdc2_scores(Table(dict(separation=[0.0], beam_fwhm_pix=[5.0], z_true=[1.0], z_pred=[1.0])))
    assert bare["sdc2"][0] == 0.0  # no fwhm_z: no frequency point either


def test_catalogue_agreement_counts_common_detections():
    truth = _truth()
    moved = truth.copy()
    moved["x"] = [10.5, 49.0]  # the second 9 px away: not the same detection
    agree = catalogue_agreement([truth], [moved], beam_fwhm_pix=5.0)
    assert (agree["n_common"], agree["reference_found"], agree["jaccard"]) == (1, 0.5, pytest.approx(1 / 3))


# --- reading SoFiA-2's catalogue, finding the binary ---------------------------------------------

# The first lines of a catalogue SoFiA-2 2.2.1 wrote (parameter.wcs = false), cut to a few columns.
SOFIA_CATALOGUE = """\
# SoFiA source catalogue
# Creator: SoFiA 2.2.1
#
# Header rows:
#   1 = column number
#   2 = parameter name
#   3 = parameter unit
#
#                           1             2             3             4             5
#                        name            id             x             y             z
#                                                     pix           pix           pix

                   SoFiA-0001             1     98.829421     93.162941     40.915974
                   SoFiA-0002             2     73.971520     60.933298     21.323554
"""


def test_read_sofia_catalogue(tmp_path):
    path = tmp_path / "cube_cat.txt"
    path.write_text(SOFIA_CATALOGUE)
    table = read_sofia_catalogue(path)
    assert table.colnames == ["name", "id", "x", "y", "z"]
    assert list(table["name"]) == ["SoFiA-0001", "SoFiA-0002"] and table["x"][1] == pytest.approx(73.97152)
    path.write_text("no header here\n")
    with pytest.raises(ValueError, match="not a SoFiA-2 ASCII catalogue"):
        read_sofia_catalogue(path)


def test_missing_binary_names_the_variable_and_path(monkeypatch, tmp_path):
    monkeypatch.setenv(SOFIA_ENV, str(tmp_path / "nowhere" / "sofia"))
    with pytest.raises(SofiaNotFoundError, match=f"{SOFIA_ENV}=.*nowhere.*not an executable"):
        find_sofia()
    monkeypatch.delenv(SOFIA_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SofiaNotFoundError, match=f"set {SOFIA_ENV}.*PATH"):
        Sofia2Finder().predict(bright_cube())


# --- the real SoFiA-2 ------------------------------------------------------------------------


def test_sofia2_finds_and_measures_bright_sources(sofia):
    sim = bright_cube()
    found = Sofia2Finder().predict(sim)
    assert tuple(found.colnames[: len(CATALOGUE_COLUMNS)]) == CATALOGUE_COLUMNS
    scores, pairs = evaluate([sim.truth], [found])
    assert (scores["tp"], scores["fp"]) == (2, 0)
    assert np.abs(pairs["x_pred"] - pairs["x_true"]).max() < 0.5
    assert np.abs(pairs["z_pred"] - pairs["z_true"]).max() < 0.5
    first = pairs[pairs["i_true"] == 0][0]
    # The elongated source: major axis along 30 degrees, its FWHMs (beam removed) and line width.
    assert abs(((first["pa_deg_pred"] - 30.0 + 90) % 180) - 90) < 10
    assert first["fwhm_x_pred"] > 1.5 * first["fwhm_y_pred"]
    assert first["fwhm_z_pred"] == pytest.approx(6.0, rel=0.3)
    # The flux of the mask (it misses the faint wings) is within a factor of two of the truth.
    assert 0.5 < pairs["flux_pred"][0] / pairs["flux_true"][0] < 1.2
    # The box is the extent of SoFiA's mask around the source.
    assert found["x0"][pairs["i_pred"][0]] < first["x_true"] < found["x1"][pairs["i_pred"][0]]
    # SoFiA's own errors of the position, line centre and flux; it has none for the shape.
    assert {"err_x", "err_y", "err_z", "err_flux"} <= set(found.colnames) and "err_fwhm_x" not in found.colnames
    assert (found["err_x"] > 0).all() and (found["err_flux"] < found["flux"]).all()
    assert found["err_flux"].unit == "Jy"


def test_sofia2_returns_an_empty_catalogue_on_noise(sofia):
    found = Sofia2Finder(reliability=True).predict(noise_cube())
    assert len(found) == 0 and tuple(found.colnames[: len(CATALOGUE_COLUMNS)]) == CATALOGUE_COLUMNS


def test_sofia2_tuning_and_agreement_with_the_python_fallback(sofia):
    cubes = [bright_cube(seed=s) for s in (1, 2)] + [random_cube(11, shape=SHAPE)]
    finder = Sofia2Finder().fit(cubes, param_grid={"threshold": (3.0, 5.0), "reliability": (False, True)})
    assert len(finder.scan_) == 4
    assert finder.best_score_["f1"] == max(finder.scan_["f1"])
    assert finder.threshold == finder.best_params_["threshold"]
    agree = sofia_agreement([cubes[0], as_cube(cubes[1])], python=SofiaFinder(threshold=5.0))
    # Both find the four bright sources.
    assert agree["n_common"] >= 4 and agree["reference_found"] == 1.0
    assert 0 < agree["jaccard"] <= 1


def test_residuals_compare_one_ellipse_written_two_ways():
    from astropy.table import Table

    from mlsky.alma.metrics import evaluate, parameter_residuals

    truth = Table({"x": [20.0], "y": [20.0], "z": [8.0], "fwhm_z": [4.0], "fwhm_x": [3.0], "fwhm_y": [6.0],
                   "pa_deg": [10.0]})
    found = Table({"x": [20.0], "y": [20.0], "z": [8.0], "fwhm_z": [4.0], "fwhm_x": [6.0], "fwhm_y": [3.0],
                   "pa_deg": [100.0]})
    _, pairs = evaluate([truth], [found], beam_fwhm_pix=5.0)
    residuals = {r["parameter"]: r["mean"] for r in parameter_residuals(pairs)}
    assert residuals["fwhm_x"] == 0 and residuals["fwhm_y"] == 0 and abs(residuals["pa_deg"]) < 1e-9


def test_position_residuals_keep_only_bright_matches():
    from astropy.table import Table

    from mlsky.alma.metrics import position_residuals

    pairs = Table({"snr_true": [10.0, 12.0, 8.0, 2.0], "x_true": [10.0, 20, 30, 40], "x_pred": [10.1, 20.1, 30.1, 45],
                   "y_true": [5.0, 6, 7, 8], "y_pred": [5.0, 6, 7, 1]})
    r = position_residuals(pairs, min_snr=5)
    assert r["n"] == 3 and abs(r["median dx"] - 0.1) < 1e-9 and r["median dy"] == 0 and r["scatter dy"] == 0
