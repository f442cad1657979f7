"""Deblending: a close pair becomes two detections at the right places; a lone source stays one."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mlsky.alma.finder import AlmaSourceFinder, as_cube
from mlsky.alma.finder.deblend import MIN_GAIN, MIN_SEPARATION, beam_major_pix, blend_fit, distinct, separation, split_blend, subtract
from mlsky.alma.metrics import match
from mlsky.alma.sim.simulate import random_cube, simulate_cube
from mlsky.alma.sim.sky import FWHM_PER_SIGMA
from mlsky.data.weights import shipped_weights

SHAPE = (48, 96, 96)


def _sky(*sources) -> Table:
    names = ("x", "y", "z", "fwhm_x", "fwhm_y", "pa_deg", "fwhm_z", "peak_jy_per_pix")
    return Table(rows=list(sources), names=names)


@pytest.fixture(scope="module")
def pair():
    """Two sources 0.8 beam apart on the sky (the beam is about 6.2 px), lines 1.7 sigma apart."""
    sky = _sky((46.0, 47.0, 20.0, 4.0, 3.0, 30.0, 8.0, 1.0e-3), (50.0, 50.0, 26.0, 3.0, 3.0, 0.0, 8.0, 0.8e-3))
    return simulate_cube(sky, shape=SHAPE, seed=11)


@pytest.fixture(scope="module")
def lone():
    return simulate_cube(_sky((48.0, 48.0, 23.0, 5.0, 3.0, 60.0, 8.0, 2.0e-3)), shape=SHAPE, seed=12)


def test_a_close_pair_is_split_into_its_two_sources(pair):
    cube = as_cube(pair)
    parts = split_blend(cube, 48.0, 48.5, 10, 37)
    assert len(parts) == 2
    for part, src in zip(parts, pair.truth):  # both sorted by line centre
        assert np.hypot(part.x - src["x"], part.y - src["y"]) < 1.0
        assert abs(part.z - src["z"]) < 1.0


def test_a_lone_bright_source_is_not_split(lone):
    cube = as_cube(lone)
    fit = blend_fit(cube, 48.0, 48.0, 12, 35)
    # It is bright enough for the second fit to be tried, and is still one source.
    assert fit.first_gain > 10 * MIN_GAIN
    assert len(split_blend(cube, 48.0, 48.0, 12, 35)) == 1


def test_subtracting_a_component_leaves_noise_there(lone):
    cube = as_cube(lone)
    (source,) = split_blend(cube, 48.0, 48.0, 12, 35)
    before = cube.snr[23, 40:57, 40:57]
    after = subtract(cube, source).snr[23, 40:57, 40:57]
    assert before.max() > 10 and np.abs(after).max() < 5
    assert cube.data is not subtract(cube, source).data  # the cube itself is left alone


def test_the_finder_reports_both_of_a_pair_only_when_deblending(pair):
    found = {flag: AlmaSourceFinder(shipped_weights("alma_finder"), deblend=flag).load().predict(pair)
             for flag in (False, True)}
    assert len(match(pair.truth, found[False])) == 1
    pairs = match(pair.truth, found[True])
    assert len(pairs) == 2 and len(found[True]) == 2
    assert found[True]["deblend"].all()


def test_a_source_reached_from_two_candidates_is_reported_once():
    # Two sources 2.2 beams apart, lines 8.5 channels apart, each with its own blob: each box's
    # detection is deblended into the same pair, which was reported twice.
    sky = random_cube(7_000_010, shape=(64, 128, 128))
    cube = as_cube(sky, psf=sky.beam)
    found = AlmaSourceFinder(shipped_weights("alma_finder")).load().predict(cube)
    assert len(match(sky.truth, found)) == len(sky.truth) == len(found)
    bmaj = beam_major_pix(cube)
    places = [(r["x"], r["y"], r["z"], r["fwhm_z"] / FWHM_PER_SIGMA) for r in found]
    assert min(separation(a, b, bmaj) for i, a in enumerate(places) for b in places[i + 1:]) > MIN_SEPARATION


def test_distinct_keeps_the_most_significant_of_a_repeat_and_every_separate_source():
    row = dict(x=10.0, y=10.0, z=20.0, fwhm_z=4.0)
    rows = [dict(row, snr=8.0), dict(row, x=10.5, snr=9.0), dict(row, x=30.0, snr=5.0),
            dict(row, z=30.0, snr=4.0)]  # a line 6 sigma away at the same place is another source
    assert [r["snr"] for r in distinct(rows, bmaj=6.0)] == [9.0, 5.0, 4.0]
