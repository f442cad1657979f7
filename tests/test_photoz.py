"""Tests of mlsky.photoz: features, metrics, and the forward selector against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.table import Table
from scipy import stats
from sklearn.feature_selection import SequentialFeatureSelector
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import KNeighborsRegressor

from mlsky.photoz import SCORERS, ForwardSelector, crps, eta, nmad, plot_predicted_vs_true
from mlsky.photoz.features import build_features, dr5q_features, dr16q_features


@pytest.fixture(scope="module")
def quasars():
    """1,500 real DR5Q quasars: native features (standardised) and redshifts."""
    import os

    if not os.environ.get("MLSKY_DATA_DIR"):
        pytest.skip("MLSKY_DATA_DIR (offline copies of the real data) is not available")
    from mlsky.data.sdss import load_dr5q

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = dr5q_features(load_dr5q(1500, seed=3))
    X = space.to_numpy()
    return (X - X.mean(axis=0)) / X.std(axis=0), space.z, space.names


# -- the selector against scikit-learn --------------------------------------------------
@pytest.mark.parametrize("scoring", ["nmad", "eta"])
def test_same_selection_and_scores_as_sklearn(quasars, scoring):
    X, z, _ = quasars
    X = X[:, :14]
    ours = ForwardSelector(5, n_neighbors=7, cv=3, scoring=scoring).fit(X, z)
    peer = SequentialFeatureSelector(KNeighborsRegressor(n_neighbors=7), n_features_to_select=5,
                                     direction="forward", cv=3, scoring=SCORERS[scoring]).fit(X, z)
    assert set(ours.selected_) == set(np.flatnonzero(peer.support_))
    assert ours.n_ties_ > ours.n_ties_settled_ > 0  # real magnitudes tie: both tie paths ran
    # At the first step (1-d walk), the second (strips), the third and fifth (pool): every
    # candidate's true score (cross_val_score's, what SFS maximises) lies within its bounds;
    # where the bounds are tight (no tie, or settled by scikit-learn's tree) it is equal.
    for step in (0, 1, 2, 4):
        chosen = list(ours.selected_[:step])
        candidates = [c for c in range(X.shape[1]) if c not in chosen]
        expected = np.array([cross_val_score(KNeighborsRegressor(n_neighbors=7), X[:, sorted(chosen + [c])], z,
                                             cv=3, scoring=SCORERS[scoring]).mean() for c in candidates])
        low, high = ours.candidate_bounds_[step].T
        assert np.all((low - 1e-12 <= expected) & (expected <= high + 1e-12))
        exact = low == high
        np.testing.assert_allclose(ours.candidate_scores_[step][exact], expected[exact], rtol=0, atol=1e-12)
        winner = candidates.index(ours.selected_[step])
        assert exact[winner] and winner == int(np.argmax(expected))
        assert ours.selection_path_["score"][step] == pytest.approx(expected[winner], abs=1e-12)


def test_custom_folds_and_torch_backend_agree(quasars):
    X, z, _ = quasars
    folds = KFold(4, shuffle=True, random_state=1)
    tree = ForwardSelector(3, n_neighbors=9, cv=folds, backend="tree").fit(X[:800], z[:800])
    brute = ForwardSelector(3, n_neighbors=9, cv=folds, backend="torch", device="cpu").fit(X[:800], z[:800])
    peer = SequentialFeatureSelector(KNeighborsRegressor(n_neighbors=9), n_features_to_select=3,
                                     cv=folds, scoring=SCORERS["nmad"]).fit(X[:800], z[:800])
    assert list(tree.selected_) == list(brute.selected_)
    assert set(tree.selected_) == set(np.flatnonzero(peer.support_))
    np.testing.assert_allclose(tree.selection_path_["score"], brute.selection_path_["score"], atol=1e-12)


@pytest.mark.parametrize("selected, pool_size", [([], None), ([2], None), ([0, 3, 4], None), ([0, 3, 4], 16)])
def test_neighbour_kernels_against_brute_force(selected, pool_size):
    """The walk (s = 0), the strips (s = 1) and the pool search (s >= 2; a tiny pool forces
    the walk along the candidate's column) against a full distance matrix, ties included."""
    from sklearn.neighbors import KDTree

    from mlsky.photoz import _knn
    from mlsky.photoz.selection import _Fold, _neighbour_values

    rng = np.random.default_rng(2)
    X = np.round(rng.normal(size=(600, 6)), 1)  # quantised, as magnitudes are: many exact ties
    y = rng.uniform(0.3, 4.0, 600)
    fold = _Fold(X, y, np.arange(200, 600), np.arange(200))
    selected = np.asarray(selected, dtype=np.int64)
    candidates = np.setdiff1d(np.arange(6), selected)
    k = 7
    value, lo, hi, status = _neighbour_values(fold, selected, candidates, k, 0, "tree", pool_size, None)
    assert {_knn.CERTAIN, _knn.TIE} <= set(np.unique(status)) or selected.size > 1
    for j, c in enumerate(candidates):
        columns = np.sort(np.append(selected, c))
        d = ((fold.x_test[:, None, columns] - fold.x_train[None, :, columns]) ** 2).sum(axis=2)
        order = np.argsort(d, axis=1, kind="stable")
        d_sorted = np.take_along_axis(d, order, axis=1)
        certain = d_sorted[:, k] > d_sorted[:, k - 1] * (1 + 1e-9)
        np.testing.assert_array_equal(status[:, j] == _knn.CERTAIN, certain)
        truth = fold.y_train[order[:, :k]].mean(axis=1)
        np.testing.assert_allclose(value[certain, j], truth[certain], rtol=0, atol=1e-12)
        # Where the k-th neighbour ties, scikit-learn's own choice lies within the bounds.
        sklearn_mean = fold.y_train[KDTree(fold.x_train[:, columns]).query(fold.x_test[:, columns], k=k)[1]].mean(axis=1)
        bounded = status[:, j] == _knn.TIE
        assert np.all(lo[bounded, j] - 1e-12 <= sklearn_mean[bounded])
        assert np.all(sklearn_mean[bounded] <= hi[bounded, j] + 1e-12)
        assert np.all((lo[:, j] - 1e-12 <= value[:, j]) & (value[:, j] <= hi[:, j] + 1e-12))


def test_selector_interface_and_path(quasars):
    X, z, names = quasars
    table = Table(X, names=names)
    sel = ForwardSelector(4, n_neighbors=10, cv=3, scoring="crps").fit(table, z)
    path = sel.selection_path_
    assert len(path) == 4 and list(path["step"]) == [1, 2, 3, 4]
    assert list(path["name"]) == [names[i] for i in sel.selected_]
    assert path["fold_scores"].shape == (4, 3)
    np.testing.assert_allclose(path["score_std"], path["fold_scores"].std(axis=1))
    assert np.all(path["score"] < 0)  # negated CRPS
    assert sel.get_support().sum() == 4
    assert sel.transform(table).colnames == [n for n in names if n in set(path["name"])]
    assert list(sel.get_feature_names_out()) == [n for n in names if n in set(path["name"])]


def test_too_few_objects_for_neighbours():
    rng = np.random.default_rng(0)
    X, z = rng.normal(size=(20, 4)), rng.uniform(0.5, 3, 20)
    with pytest.raises(ValueError, match="n_neighbors=15"):
        ForwardSelector(2, n_neighbors=15, cv=3).fit(X, z)


def test_bad_arguments():
    rng = np.random.default_rng(0)
    X, z = rng.normal(size=(100, 4)), rng.uniform(0.5, 3, 100)
    with pytest.raises(ValueError, match="scoring"):
        ForwardSelector(2, scoring="rmse", n_neighbors=5).fit(X, z)
    with pytest.raises(ValueError, match="n_features_to_select"):
        ForwardSelector(4, n_neighbors=5).fit(X, z)
    X[3, 1] = np.nan
    with pytest.raises(ValueError):
        ForwardSelector(2, n_neighbors=5).fit(X, z)


# -- the feature space -----------------------------------------------------------------
def _two_kinds(n: int = 4) -> Table:
    rng = np.random.default_rng(1)
    t = Table()
    for kind in ("psf", "model"):
        for b in "ugriz":
            t[f"{kind}Mag_{b}"] = rng.uniform(18, 21, n)
            t[f"{kind}MagErr_{b}"] = rng.uniform(0.01, 0.1, n)
    for b in "ugriz":
        t[f"extinction_{b}"] = rng.uniform(0, 0.3, n)
    t["zspec"] = rng.uniform(0.5, 3, n)
    return t


def test_build_features_names_and_counts():
    t = _two_kinds()
    types = {"psf": ("psfMag_{band}", "psfMagErr_{band}"), "model": ("modelMag_{band}", "modelMagErr_{band}")}
    space = build_features(t, types, extinction="extinction_{band}", target="zspec")
    # 10 magnitudes, 10 errors, 5 extinctions, C(10, 2) = 45 colours within and across kinds.
    assert space.n_features == 10 + 10 + 5 + 45
    assert {"u_psf", "sig_u_psf", "ext_u", "u_psf-g_psf", "i_psf-z_model"} <= set(space.names)
    np.testing.assert_allclose(space.features["i_psf-z_model"], t["psfMag_i"] - t["modelMag_z"])
    assert space.n_subsets(10) == 396704524216
    np.testing.assert_array_equal(space.z, t["zspec"])


def test_dr16q_feature_space():
    t = _two_kinds()
    for kind in ("petroMag", "fiberMag", "cModelMag"):
        for b in "ugriz":
            t[f"{kind}_{b}"] = t[f"psfMag_{b}"] + 0.1
            t[f"{kind}Err_{b}"] = t[f"psfMagErr_{b}"]
    assert dr16q_features(t).n_features == 25 + 25 + 5 + 300


def test_refuses_target_derived_columns():
    t = Table({"u_mag": [19.0], "sig_u_mag": [0.1], "g_mag": [18.0], "sig_g_mag": [0.1], "Mp": [-26.0], "z": [2.0]})
    with pytest.raises(ValueError, match="Mp"):
        build_features(t, {"psf": ("{band}_mag", "sig_{band}_mag")}, bands="ug", extra=("Mp",))
    with pytest.raises(ValueError, match="z"):
        build_features(t, {"psf": ("{band}_mag", None), "bad": ("z", None)}, bands="ug")


def test_missing_column_is_named():
    t = Table({"u_mag": [19.0], "sig_u_mag": [0.1], "z": [2.0]})
    with pytest.raises(KeyError, match="g_mag"):
        build_features(t, {"psf": ("{band}_mag", "sig_{band}_mag")}, bands="ug")


def test_missing_magnitudes_dropped_and_counted():
    t = Table({"u_mag": [19.0, -9999.0, 20.0, 19.5], "g_mag": [18.0, 18.5, 0.0, np.nan],
               "sig_u_mag": [0.1] * 4, "sig_g_mag": [0.1] * 4, "z": [1.0, 2.0, 3.0, 1.5]})
    with pytest.warns(UserWarning, match="dropped 3 of 4"):
        space = build_features(t, {"psf": ("{band}_mag", "sig_{band}_mag")}, bands="ug")
    assert space.n_dropped == 3 and list(space.kept) == [True, False, False, False]
    assert len(space.features) == 1 and space.z.tolist() == [1.0]


def test_masked_fill_and_absurd_values_are_dropped_and_counted():
    from astropy.table import MaskedColumn

    # Row 1: masked (1e20 under the mask); 2: -9999; 3: a 1e300 magnitude; 4: masked int
    # radio flux; 5: a fill value in an extra column; 0 and 6 are good.
    t = Table({"u_mag": MaskedColumn([19.0, 1e20, -9999.0, 1e300, 19.2, 19.1, 20.0],
                                     mask=[0, 1, 0, 0, 0, 0, 0]),
               "g_mag": [18.0, 18.5, 18.1, 18.2, 18.3, 18.4, 18.9], "sig_u_mag": [0.1] * 7, "sig_g_mag": [0.1] * 7,
               "FIRST": MaskedColumn([0, 1, 2, 3, 4, 5, 6], mask=[0, 0, 0, 0, 1, 0, 0]),
               "ROSAT": [-9.0, -9.0, -9.0, -9.0, -9.0, 1e20, -1.2], "z": [1.0, 2.0, 3.0, 1.5, 2.5, 0.5, 2.2]})
    with pytest.warns(UserWarning) as caught:
        space = build_features(t, {"psf": ("{band}_mag", "sig_{band}_mag")}, bands="ug", extra=("FIRST", "ROSAT"))
    text = str(caught[0].message)
    assert text.startswith("build_features: dropped 5 of 7 objects (2 with a masked value, ")
    assert "1 with a 'not measured' magnitude (-9999, 0)" in text and "1 with a magnitude beyond ±100" in text
    assert text.endswith("1 with a fill value (|x| >= 1e+20)).")
    assert list(space.kept) == [True, False, False, False, False, False, True]
    assert np.abs(space.to_numpy()).max() < 100 and space.z.tolist() == [1.0, 2.2]


def test_selector_refuses_masked_sentinel_and_overflowing_input():
    rng = np.random.default_rng(0)
    X, z = rng.normal(size=(60, 3)), rng.uniform(0, 3, 60)
    t = Table(X, names=["a", "b", "c"], masked=True)
    t["b"].mask[4] = True
    with pytest.raises(ValueError, match=r"1 masked values \(in b\)"):
        ForwardSelector(1, n_neighbors=3).fit(t, z)
    for value, message in [(-9999.0, "values of -9999 or 1e20"), (1e20, "values of -9999 or 1e20"),
                           (1e300, "squared distances overflow float64")]:
        bad = X.copy()
        bad[7, 2] = value
        with pytest.raises(ValueError, match=message):
            ForwardSelector(1, n_neighbors=3).fit(bad, z)
    with pytest.raises(ValueError, match="n_neighbors=0: the number of neighbours must be an integer >= 1"):
        ForwardSelector(1, n_neighbors=0).fit(X, z)


def test_cli_select_small_draw_and_bad_k(data_dir, capsys):
    from mlsky.cli import main

    # Ten quasars: the radio and X-ray columns are constant (no detection), std 0.
    assert main(["photoz", "select", "--n", "10", "--n-features", "2", "--k", "2", "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("±") == 2 and "nan" not in out
    assert main(["photoz", "select", "--n", "200", "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "mlsky photoz: error: n_neighbors=0: the number of neighbours must be an integer >= 1.\n"


def test_dr5q_native_and_derived_counts(data_dir):
    from mlsky.data.sdss import load_dr5q

    table = load_dr5q(500, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native, derived = dr5q_features(table), dr5q_features(table, derived=True)
    assert native.n_features == 22 and "Mp" not in native.names
    assert derived.n_features >= 200
    assert np.isfinite(derived.to_numpy()).all()
    assert len(set(derived.names)) == derived.n_features


# -- metrics ---------------------------------------------------------------------------
def test_metrics_on_known_values():
    z = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    zp = np.array([1.0, 1.02, 0.98, 1.04, 2.0])  # dz = 0, .01, -.01, .02, .5
    assert nmad(z, zp) == pytest.approx(0.01 / stats.norm.ppf(0.75))  # MAD 0.01, as a Gaussian sigma
    assert eta(z, zp) == pytest.approx(0.2)
    samples = np.array([[1.0, 2.0, 3.0]])
    # Empirical CRPS: mean|s - y| - 0.5 mean|s_i - s_j| = 2/3 - 0.5 * 8/9.
    assert crps(np.array([2.0]), samples) == pytest.approx(2 / 3 - 4 / 9)
    assert SCORERS["nmad"]._sign == -1


def test_nmad_of_a_known_scatter():
    # Moved from tests/test_ops.py with the metric itself (chapter 1 now uses this one).
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 3, 200_000)
    assert nmad(z, z + 0.05 * (1 + z) * rng.normal(size=z.size)) == pytest.approx(0.05, rel=0.02)


def test_plot_predicted_vs_true():
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    z = rng.uniform(0.1, 4, 300)
    ax = plot_predicted_vs_true(z, z + rng.normal(0, 0.1, 300), title="test")
    assert ax.get_xlabel() == "spectroscopic z" and "NMAD" in ax.texts[0].get_text()


def test_transform_plain_arrays():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    z = 1 + 0.3 * X[:, 2] - 0.2 * X[:, 4]
    sel = ForwardSelector(2, n_neighbors=5, cv=3).fit(X, z)
    assert sorted(sel.selected_.tolist()) == [2, 4]
    np.testing.assert_array_equal(sel.transform(X), X[:, [2, 4]])


def test_cli_select(data_dir, capsys):
    from mlsky.cli import main

    assert main(["photoz", "select", "--n", "600", "--n-features", "2", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "22 features" in out and "C(22, 2) = 231" in out
    assert out.count("±") == 2


def test_selection_frequency_finds_the_informative_feature_every_time():
    from mlsky.photoz import selection_frequency

    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 6))
    z = 1 + 0.4 * X[:, 3] + 0.05 * rng.normal(size=600)
    counts = selection_frequency(X, z, 1, n_resamples=4, n_neighbors=5, seed=2)
    assert counts == {3: 4}
    assert counts == selection_frequency(X, z, 1, n_resamples=4, n_neighbors=5, seed=2)
