"""AlmaSourceFinder.fit: thresholds chosen on validation cubes, as the peers' fit chooses theirs."""

from __future__ import annotations

import pytest

from mlsky.alma.finder import AlmaSourceFinder
from mlsky.alma.metrics import evaluate
from mlsky.alma.sim.simulate import random_cube
from mlsky.data.weights import shipped_weights

GRID = {"blob_threshold": (0.3, 0.6, 0.95), "gru_threshold": (0.3, 0.7)}


@pytest.fixture(scope="module")
def cubes():
    return [random_cube(8_100_000 + i, shape=(32, 96, 96)) for i in range(3)]


@pytest.fixture(scope="module")
def fitted(cubes):
    return AlmaSourceFinder(shipped_weights("alma_finder")).fit(cubes, GRID)


def test_fit_scans_the_grid_and_keeps_the_best(fitted):
    assert len(fitted.scan_) == 6
    assert fitted.best_score_["f1"] == max(fitted.scan_["f1"])
    assert min(fitted.scan_["f1"]) < fitted.best_score_["f1"]  # the grid's choice matters
    for name, value in fitted.best_params_.items():
        assert getattr(fitted.config_, name) == value


def test_predict_after_fit_scores_what_the_scan_scored(fitted, cubes):
    # The scan reuses each box's and detection's result across thresholds; predict runs afresh.
    scores, _ = evaluate([c.truth for c in cubes], [fitted.predict(c) for c in cubes])
    for name in ("tp", "fp", "fn"):
        assert scores[name] == fitted.best_score_[name]


def test_fit_leaves_the_weights_folder_alone(fitted):
    from mlsky.alma.finder.pipeline import PipelineConfig

    shipped = PipelineConfig.read(shipped_weights("alma_finder"))
    assert (shipped.blob_threshold, shipped.gru_threshold) == (0.4, 0.7)


def test_fit_rejects_an_unknown_parameter(cubes):
    with pytest.raises(ValueError, match="unknown parameter"):
        AlmaSourceFinder(shipped_weights("alma_finder")).fit(cubes[:1], {"threshold": (0.5,)})
