import math

import numpy as np
import pytest
import torch
from astropy.table import Table
from sklearn.metrics import r2_score

from mlsky import ops


def test_quasar_photometry_drops_missing_magnitudes_with_a_count():
    table = Table({"z": [1.0, 2.0, 0.5, np.nan]})
    for b in "ugriz":
        table[f"{b}_mag"] = [20.0, 20.5, 19.0, 18.0]
    table["g_mag"][1] = -9999.0
    X, z, names, dropped = ops.quasar_photometry(table)
    assert X.shape == (2, 5) and dropped == 2 and names[-1] == "i"
    assert np.allclose(X[0], [0, 0, 0, 0, 20])


def test_quasar_photometry_names_missing_columns():
    with pytest.raises(KeyError, match="r_mag"):
        ops.quasar_photometry(Table({"z": [1.0], "u_mag": [1.0], "g_mag": [1.0]}))


def test_hidden_law_projections_are_noise_but_the_law_is_exact():
    X, y = ops.hidden_law(4000, 8, seed=1)
    best = ops.projection_scores(X, y, [f"x{i}" for i in range(8)],
                                 score=lambda t, p: 1 - r2_score(t, p))
    assert best["score"][0] > 0.9  # the best pair explains under 10% of the variance
    assert np.allclose(y, np.cos(math.pi / 2 * X.sum(1)))


def test_projection_scores_find_the_informative_pair():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    y = X[:, 1] ** 2 + X[:, 3]
    table = ops.projection_scores(X, y, list("abcd"), score=lambda t, p: float(np.mean((p - t) ** 2)))
    assert table["features"][0] == "b, d"


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_sawtooth_network_is_exact(depth):
    x = np.linspace(0, 1, 4097)
    net = ops.sawtooth_network(depth)
    out = net(torch.tensor(x)[:, None]).detach().numpy()[:, 0]
    assert np.max(np.abs(out - ops.sawtooth(x, depth))) < 1e-12
    assert sum(p.numel() for p in net.parameters()) == 6 * depth + 1


def test_width_helps_a_one_hidden_layer_network():
    table = ops.width_sweep(lambda x: np.sin(3 * x), [1, 16], n_train=500, n_restarts=1)
    assert table["mse"][1] < 0.01 < table["mse"][0]
    assert list(table["n_params"]) == [4, 49]


def test_label_noise_ceiling_matches_a_simulation():
    _, t = ops.toy_morphology(50_000, seed=2)
    labels = ops.noisy_labels(t, 1.8 / math.sqrt(2), seed=3)
    assert np.mean(labels == t) == pytest.approx(ops.label_noise_ceiling(t), abs=0.01)
    assert ops.label_noise_rms_floor() == pytest.approx(1.2728, abs=1e-4)


def test_kepler_third_law_is_recovered_and_predicts():
    a, k = ops.fit_power_law(ops.PLANETS["a"].value, ops.PLANETS["period"].value)
    assert k == pytest.approx(1.5, abs=0.005) and a == pytest.approx(1.0, abs=0.01)
    predicted = a * ops.HELD_OUT_BODIES["a"].value ** k
    assert np.allclose(predicted, ops.HELD_OUT_BODIES["period"].value, rtol=0.02)


def test_description_length():
    assert ops.description_length([0.0], 0.01) == 0
    assert ops.description_length([1.0, -1.0], 0.5) == pytest.approx(2 * math.log2(5))
