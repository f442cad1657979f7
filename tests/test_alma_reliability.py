"""The negated-cube test of the finder's candidates (mlsky.alma.finder.reliability)."""

from __future__ import annotations

import numpy as np
import pytest

from mlsky.alma.finder import AlmaSourceFinder, as_cube
from mlsky.alma.finder.reliability import (
    NOISE_RATE,
    REFERENCE_SNR,
    expected_false,
    negated,
    required_significance,
    resolution_elements,
    significance,
)
from mlsky.alma.metrics import detection_scores
from mlsky.alma.sim.simulate import random_cube
from mlsky.cli import main
from mlsky.data.weights import shipped_weights


def test_expected_false_counts_the_negatives_tail():
    few, volume = np.array([2.0, 3.6, 3.9, 4.2]), 1e5
    assert expected_false(REFERENCE_SNR, few, volume) == pytest.approx(3)  # the three above the reference
    assert expected_false(2.0, few, volume) == pytest.approx(3)
    assert expected_false(6.0, few, volume) < expected_false(5.0, few, volume) < 1


def test_a_quiet_cube_counts_the_noise_rate_of_its_volume():
    small, large = 2e4, 2e6
    assert expected_false(REFERENCE_SNR, np.array([]), small) == pytest.approx(NOISE_RATE * small)
    assert expected_false(REFERENCE_SNR, np.array([]), large) == pytest.approx(NOISE_RATE * large)
    # The larger volume holds more noise peaks: a candidate must be more significant to pass.
    grid = np.linspace(3.5, 8, 451)
    needed = [grid[np.argmax(expected_false(grid, np.array([]), v) <= 0.02)] for v in (small, large)]
    assert needed[0] < needed[1]
    # A tail seen in the cube counts as it is, above the floor.
    assert expected_false(REFERENCE_SNR, np.array([3.6, 3.7]), small) == pytest.approx(2)


def test_required_significance_is_where_the_expected_false_count_falls_to_the_limit():
    tail = np.array([3.6, 3.9, 4.4, 5.1])
    for noise, volume in ((tail, 1e5), (np.array([]), 2e4), (np.array([]), 2e6)):
        needed = required_significance(noise, volume, 0.02)
        assert expected_false(needed, noise, volume) == pytest.approx(0.02)
        assert expected_false(needed - 0.01, noise, volume) > 0.02
    assert required_significance(np.array([]), 2e4, 0.02) < required_significance(np.array([]), 2e6, 0.02)
    # A cube that should hold fewer noise candidates than the limit keeps all above the reference.
    assert required_significance(np.array([]), 1e3, 0.02) == REFERENCE_SNR


def test_resolution_elements_count_unblanked_pixels_and_channels():
    cube = as_cube(random_cube(3, shape=(16, 64, 64)))
    full = resolution_elements(cube)
    assert full == pytest.approx(16 * 64 * 64 / cube.beam_area_pix)
    cube.blank[:, :32] = True
    assert resolution_elements(cube) == pytest.approx(full / 2)


def test_expected_false_recovers_a_wide_tail():
    # 2000 negatives from a Gaussian tail of width 1.4 above the reference: the prior's width
    # (1) counts for little against them.
    rng = np.random.default_rng(0)
    s0, sigma = REFERENCE_SNR, 1.4
    tail = np.sqrt(s0**2 + 2 * sigma**2 * rng.exponential(size=2000))
    for s in (4.0, 5.0, 6.0):
        assert expected_false(s, tail, 1e5) == pytest.approx(2000 * np.exp(-(s**2 - s0**2) / (2 * sigma**2)), rel=0.15)


def test_significance_of_a_source_and_of_empty_sky():
    sim = next(c for c in (random_cube(seed, shape=(32, 64, 64)) for seed in range(100)) if c.truth["snr"].max() > 10)
    cube = as_cube(sim)
    src = max(sim.truth, key=lambda s: s["snr"])
    z0, z1 = int(src["z0"]), int(src["z1"])
    on = significance(cube, src["x"], src["y"], z0, z1)
    assert on > 0.5 * src["snr"] > 5
    # The sign flipped: a source is a hole, and the significance there is not a detection.
    assert significance(negated(cube), src["x"], src["y"], z0, z1) < 2
    far = [(x, y) for x in (8, 32, 56) for y in (8, 32, 56)
           if np.hypot(sim.truth["x"] - x, sim.truth["y"] - y).min() > 15]
    empty = [significance(cube, x, y, z0, z1) for x, y in far]
    assert far and max(empty) < 4


@pytest.fixture(scope="module")
def large_cube():
    # Four times the area and twice the channels of the training cubes: more noise peaks look
    # like sources to the networks (a development seed of mlsky.alma.finder.reliability).
    return random_cube(8_700_001, shape=(128, 256, 256))


def test_the_negated_cube_removes_false_detections_and_keeps_the_sources(large_cube):
    weights = shipped_weights("alma_finder")
    every = AlmaSourceFinder(weights, false_alarms=None).predict(large_cube)
    kept = AlmaSourceFinder(weights).predict(large_cube)
    before, after = detection_scores(large_cube.truth, every), detection_scores(large_cube.truth, kept)
    assert after["tp"] == before["tp"] >= 2
    assert after["fp"] < before["fp"]
    assert "n_false" not in every.colnames and "snr" in every.colnames
    assert np.all(kept["n_false"] <= 0.02) and np.all(kept["snr"] > REFERENCE_SNR)


def test_false_alarms_must_be_positive():
    with pytest.raises(ValueError, match="false_alarms"):
        AlmaSourceFinder(shipped_weights("alma_finder"), false_alarms=0).load()


def test_cli_refuses_a_bad_false_alarms(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["alma", "detect", "cube.fits", "-o", str(tmp_path / "c.ecsv"), "--false-alarms", "-1"])
    assert stop.value.code == 2
    assert "argument --false-alarms: '-1': give a positive number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_negated_map_from_one_filtering_is_the_negated_cubes_map():
    # maps() reads the negated cube's map from the same matched filtering; it must be the map
    # that filtering -cube gives, to the bit.
    finder = AlmaSourceFinder(shipped_weights("alma_finder")).load()
    cube = as_cube(random_cube(8_700_002, shape=(64, 96, 96)))
    prob, negated_prob = finder.maps(cube)
    assert np.array_equal(prob, finder.probability(cube))
    assert np.array_equal(negated_prob, finder.probability(negated(cube)))
    assert not np.array_equal(prob, negated_prob)
