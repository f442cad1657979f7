"""Forward feature selection with a kNN regressor ("feature addition", D'Isanto et al. 2018).

:class:`ForwardSelector` adds, one at a time, the feature whose addition gives the best
cross-validated score of a k-nearest-neighbour regression of the redshift. It selects the
same features as scikit-learn's

    SequentialFeatureSelector(KNeighborsRegressor(n_neighbors=k), direction="forward",
                              cv=cv, scoring=SCORERS[scoring])

(same folds, same scorer, ties between candidates broken towards the first column), but
finds the neighbours of every candidate without refitting a model per candidate and fold,
with exact searches written for this one job (:mod:`mlsky.photoz._knn`, numba, on every
core):

* first step: each candidate alone, by a walk out from the query's rank in the sorted
  column;
* second step: strips of the selected feature, each ordered by the candidate, searched
  from the query's strip outwards;
* from the third step on: adding a feature only lengthens distances, so each query's
  nearest neighbours in the selected space (one KD-tree query per fold and step, the
  "pool") are read once, in order, for every candidate at once; a candidate is done as soon
  as the next pool point lies farther in the selected space alone than its k-th neighbour.
  The rare candidate the pool cannot settle walks out along its own sorted column
  (Fagin's threshold algorithm);
* on a GPU (``backend="torch"``) the neighbours come from a brute-force distance matrix,
  updated with one squared term per candidate.

A neighbour set is certain when the k-th and (k+1)-th distances differ by more than
rounding could explain. Quantised magnitudes often tie there instead, and then which
equidistant point enters depends on how the search breaks ties. Those cases are settled by
scikit-learn's own tree, so they come out exactly as scikit-learn has them -- but only for
the candidates that could still win the step: for each tie the kernels bound the
prediction over every admissible choice, hence each candidate's score. A candidate whose
best possible score is below another's worst possible score is out without settling its
ties; for the others, only the tied queries whose prediction could still move the score
(the median residual or the median absolute deviation, for NMAD) are settled.

The selected features, and the score of each one in ``selection_path_``, equal
scikit-learn's: every candidate that could have been selected is scored exactly as
``cross_val_score(KNeighborsRegressor(k), X[:, subset], y, cv=cv,
scoring=SCORERS[scoring]).mean()`` (to rounding: the tests compare at 1e-12), for up to 15
features (beyond that scikit-learn switches to brute force, whose rounding of distances
differs).

Examples
--------
>>> from mlsky.photoz import ForwardSelector
>>> selector = ForwardSelector(n_features_to_select=10, n_neighbors=15, cv=3)  # doctest: +SKIP
>>> selector.fit(X, z).selection_path_                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from numbers import Integral
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from astropy.stats import mad_std
from astropy.table import Table
from scipy.spatial import cKDTree
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.model_selection import check_cv
from sklearn.neighbors import KDTree, KNeighborsRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

from mlsky.photoz import _knn
from mlsky.photoz.metrics import NMAD_SCALE, OUTLIER_THRESHOLD, crps_per_object, normalised_residual

#: Relative gap below which two neighbour distances count as tied (far above rounding).
TIE_EPS = 1e-9
#: Slack on score bounds for the rounding of sums in a different order (scores are ~1e-2).
BOUND_MARGIN = 1e-9


#: Values that stand for "no measurement": SDSS's -9999, astropy's fill value of masked floats.
SENTINELS = (-9999.0, 1e20)


def _as_array(X) -> tuple[np.ndarray, list[str] | None]:
    """``X`` as an array and its column names; masked values are refused, never read as data."""
    names = list(X.colnames) if isinstance(X, Table) else None
    columns = [X[c] for c in X.colnames] if isinstance(X, Table) else [X]
    n_masked = sum(int(np.count_nonzero(np.ma.getmaskarray(c))) for c in columns)
    if n_masked:
        where = [c.name for c in columns if np.ma.is_masked(c)] if names else ["X"]
        raise ValueError(f"{n_masked} masked values (in {', '.join(map(str, where[:5]))}): a masked value is "
                         "no measurement. Drop those rows (build_features does, and counts them) first.")
    if names is None:
        return np.ma.getdata(X), None
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns]), names


def _check_values(X: np.ndarray, names: list[str] | None) -> None:
    """Refuse sentinel values and values whose squared distances would overflow float64."""
    sentinel = np.isin(X, SENTINELS)
    if sentinel.any():
        column = int(np.flatnonzero(sentinel.any(axis=0))[0])
        raise ValueError(
            f"X holds {int(sentinel.sum())} values of -9999 or 1e20 (first in column "
            f"{names[column] if names else column}): SDSS's 'not measured' and astropy's fill value "
            "are not measurements. Drop those rows (build_features does, and counts them) first.")
    # A distance sums n_features squares of differences of up to twice the largest value.
    largest, limit = float(np.abs(X).max()), np.sqrt(np.finfo(np.float64).max / X.shape[1]) / 2
    if largest > limit:
        raise ValueError(f"X holds values up to {largest:.3g}: their squared distances overflow float64 "
                         f"(limit {limit:.3g}). Standardise the features first (sklearn's StandardScaler).")


class ForwardSelector(SelectorMixin, BaseEstimator):
    """Greedy forward selection of features for kNN photometric redshifts.

    Parameters
    ----------
    n_features_to_select : int
        How many features to select (the paper: 10).
    n_neighbors : int
        k of the kNN regressor (uniform weights, Euclidean distance).
    cv : int or cross-validation splitter
        Folds, as in scikit-learn (an int means ``KFold(cv)``, unshuffled).
    scoring : {"nmad", "eta", "crps"}
        Metric of the held-out fold: NMAD or outlier fraction η of the neighbours' mean
        redshift, or the CRPS of the neighbours' redshift distribution. Scores are the
        negated metric (higher is better), as scikit-learn scorers are.
    backend : {"auto", "tree", "torch"}
        ``tree``: the exact CPU search described above; ``torch``: brute force with torch
        on ``device``; ``auto``: torch on CUDA, else tree.
    device : str or torch.device, optional
        Device of the torch backend (default: :func:`mlsky.get_device`).
    pool_size : int, optional
        Selected-space neighbours per query that the search reads before it walks along a
        candidate's own column (default: four times the points expected inside the k-th
        neighbour distance, which settles nearly every pair). Any size gives the same answer.
    progress : bool
        Show a progress bar over the steps.

    Attributes
    ----------
    support_ : ndarray of bool
        The selected features.
    selected_ : ndarray of int
        Indices of the selected features, in the order they were added.
    selection_path_ : astropy.table.Table
        One row per step: the feature added, its mean score over folds, the standard
        deviation over folds and the per-fold scores.
    candidate_scores_ : list of ndarray
        For each step, the mean score of every candidate (in column order, selected ones
        excluded), the quantity maximised. Exact (scikit-learn's ties) for every candidate
        that could have won the step; a candidate proven out of reach keeps the score of
        the kernel's own tie-breaking, within its bounds.
    candidate_bounds_ : list of ndarray
        For each step, shape (candidates, 2): the lowest and highest mean score each
        candidate can have under any breaking of its ties (equal where it is exact).
    n_ties_ : int
        Query/candidate pairs whose k-th neighbour was tied.
    n_ties_settled_ : int
        Those of them settled by scikit-learn's tree (the rest could not change the step).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 6)); z = 1 + 0.3 * X[:, 2] - 0.2 * X[:, 4]
    >>> sel = ForwardSelector(n_features_to_select=2, n_neighbors=5, cv=3).fit(X, z)
    >>> sorted(sel.selected_.tolist())
    [2, 4]
    """

    def __init__(self, n_features_to_select: int = 10, *, n_neighbors: int = 15, cv=3,
                 scoring: str = "nmad", backend: str = "auto", device=None,
                 pool_size: int | None = None, progress: bool = False):
        self.n_features_to_select = n_features_to_select
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.scoring = scoring
        self.backend = backend
        self.device = device
        self.pool_size = pool_size
        self.progress = progress

    # -- scikit-learn interface -------------------------------------------------------
    def fit(self, X, y):
        """Select ``n_features_to_select`` features of ``X`` for predicting ``y``.

        Raises
        ------
        ValueError
            On masked, sentinel (-9999, 1e20) or non-finite values, values so large that
            distances overflow, ``n_neighbors`` < 1, an unknown scoring, too many features
            asked for, or a training fold with fewer objects than ``n_neighbors``.
        """
        X, names = _as_array(X)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, ensure_min_features=2)
        _check_values(X, names)
        if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, Integral) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors={self.n_neighbors!r}: the number of neighbours must be an integer >= 1.")
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        if self.scoring not in ("nmad", "eta", "crps"):
            raise ValueError(f"scoring={self.scoring!r}; use 'nmad', 'eta' or 'crps'.")
        n_features = X.shape[1]
        if not 0 < self.n_features_to_select < n_features:
            raise ValueError(
                f"n_features_to_select={self.n_features_to_select} must be between 1 and "
                f"{n_features - 1} (X has {n_features} features)."
            )
        folds = list(check_cv(self.cv, y, classifier=False).split(X, y))
        smallest = min(len(train) for train, _ in folds)
        if smallest <= self.n_neighbors:
            raise ValueError(
                f"a training fold holds {smallest} objects, not more than n_neighbors="
                f"{self.n_neighbors}: use fewer neighbours, fewer folds or more objects."
            )
        backend = self._backend()
        mask = np.zeros(n_features, dtype=bool)
        order, best_means, fold_rows = [], [], []
        self.candidate_scores_, self.candidate_bounds_, self.n_ties_, self.n_ties_settled_ = [], [], 0, 0
        steps = range(self.n_features_to_select)
        if self.progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="forward selection", unit="feature")
        # Sorted columns per fold, made once: they serve every step.
        prepared = [_Fold(X, y, train, test) for train, test in folds]
        for _ in steps:
            candidates = np.flatnonzero(~mask)
            scores, low, high = self._step_scores(prepared, np.flatnonzero(mask), candidates, backend)
            # The same reduction as cross_val_score(...).mean(), candidate by candidate.
            means = np.array([np.mean(row) for row in scores])
            self.candidate_bounds_.append(np.column_stack([low.mean(axis=1), high.mean(axis=1)]))
            best = int(np.argmax(means))
            mask[candidates[best]] = True
            order.append(candidates[best])
            best_means.append(means[best])
            fold_rows.append(scores[best])
            self.candidate_scores_.append(means)
        self.support_ = mask
        self.selected_ = np.asarray(order)
        self.n_features_to_select_ = int(mask.sum())
        fold_rows = np.asarray(fold_rows)
        path = Table()
        path["step"] = np.arange(1, len(order) + 1)
        path["feature"] = self.selected_
        if hasattr(self, "feature_names_in_"):
            path["name"] = [str(self.feature_names_in_[i]) for i in order]
        path["score"] = best_means
        path["score_std"] = fold_rows.std(axis=1)
        path["fold_scores"] = fold_rows
        path.meta["scoring"] = f"-{self.scoring} (higher is better)"
        self.selection_path_ = path
        return self

    def transform(self, X):
        """Keep the selected columns (an astropy Table stays a Table)."""
        if isinstance(X, Table):
            check_is_fitted(self)
            return X[[c for c, keep in zip(X.colnames, self.support_) if keep]]
        return super().transform(X)

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_

    # -- neighbours and scores --------------------------------------------------------
    def _backend(self) -> str:
        if self.backend not in ("auto", "tree", "torch"):
            raise ValueError(f"backend={self.backend!r}; use 'auto', 'tree' or 'torch'.")
        if self.backend != "auto":
            return self.backend
        return "torch" if self._device().type == "cuda" else "tree"

    def _device(self):
        import torch

        from mlsky.config import get_device

        return torch.device(self.device) if self.device is not None else get_device()

    def _step_scores(self, folds, selected, candidates, backend):
        """Score of every candidate on every fold, and its bounds: three (candidates, folds) arrays.

        Ties are settled exactly only for candidates whose upper bound reaches the best
        lower bound: the others cannot be selected whatever the ties do.
        """
        k = self.n_neighbors
        mode = 1 if self.scoring == "crps" else 0
        found = [_neighbour_values(fold, selected, candidates, k, mode, backend, self.pool_size, self._device)
                 for fold in folds]
        scores = np.empty((candidates.size, len(folds)))
        low = np.empty_like(scores)
        high = np.empty_like(scores)
        for f, (fold, (value, lo, hi, status)) in enumerate(zip(folds, found)):
            self.n_ties_ += int(np.count_nonzero(status != _knn.CERTAIN))
            scores[:, f] = low[:, f] = high[:, f] = self._score(fold.y_test, value)
            for j in np.flatnonzero(status.any(axis=0)):
                if (status[:, j] == _knn.TIE_UNBOUNDED).any():
                    low[j, f], high[j, f] = -np.inf, np.inf
                else:
                    low[j, f], high[j, f] = _score_bounds(self.scoring, fold.y_test, lo[:, j], hi[:, j])
        # Bounds of the mean over folds; the margin covers rounding in the bounds themselves.
        reach = high.mean(axis=1) >= low.mean(axis=1).max() - BOUND_MARGIN
        jobs = [(j, f) for j in np.flatnonzero(reach) for f, (_, _, _, status) in enumerate(found)
                if (status[:, j] != _knn.CERTAIN).any()]

        def settle(job):
            j, f = job
            fold, (value, lo, hi, status) = folds[f], found[f]
            search = _SklearnNeighbours(fold.x_train, np.sort(np.append(selected, candidates[j])), k)
            row, lo, hi = value[:, j].copy(), lo[:, j].copy(), hi[:, j].copy()
            open_rows = status[:, j] != _knn.CERTAIN
            bounded = not mode and not (status[:, j] == _knn.TIE_UNBOUNDED).any()
            rows = _undecided_rows(self.scoring, fold.y_test, lo, hi, open_rows) if bounded else np.flatnonzero(open_rows)
            n_settled = 0
            # Settle only the ties that can still move the score; each round narrows the
            # score's bounds, until no open tie can change it.
            while rows.size:
                neighbours = search.kneighbors(fold.x_test[rows])
                if mode:
                    row[rows] = crps_per_object(fold.y_test[rows], fold.y_train[neighbours])
                else:
                    # The very expression of KNeighborsRegressor.predict, for the same rounding.
                    row[rows] = np.mean(fold.y_train.reshape(-1, 1)[neighbours], axis=1).ravel()
                lo[rows] = hi[rows] = row[rows]
                open_rows[rows] = False
                n_settled += rows.size
                rows = _undecided_rows(self.scoring, fold.y_test, lo, hi, open_rows) if bounded else rows[:0]
            return row, n_settled

        # scikit-learn's tree releases the GIL while it builds and searches: threads pay.
        with ThreadPoolExecutor(max_workers=numba.get_num_threads()) as pool:
            settled = list(pool.map(settle, jobs))
        for (j, f), (row, n_settled) in zip(jobs, settled):
            found[f][0][:, j] = row
            self.n_ties_settled_ += n_settled
        for j in {j for j, _ in jobs}:
            for f, fold in enumerate(folds):
                scores[j, f] = low[j, f] = high[j, f] = float(self._score(fold.y_test, found[f][0][:, j]))
        return scores, low, high

    def _score(self, y_test, value):
        """Score of the values of one candidate (a column) or of several (the columns of a matrix).

        Column by column, the arithmetic is that of the metric on a single column (the
        median selects, and the residuals are formed element by element), so both agree
        to the last bit.
        """
        if self.scoring == "crps":
            return -np.mean(value, axis=0)
        z = y_test if value.ndim == 1 else y_test[:, None]
        dz = (value - z) / (1.0 + z)
        if self.scoring == "eta":
            return -np.mean(np.abs(dz) > OUTLIER_THRESHOLD, axis=0)
        return -mad_std(dz, axis=0)


def _outlier_sides(r_lo, r_hi) -> tuple[np.ndarray, np.ndarray]:
    """Rows surely outliers, and rows possibly outliers, when each residual lies in [r_lo, r_hi]."""
    sure = (r_lo > OUTLIER_THRESHOLD) | (r_hi < -OUTLIER_THRESHOLD)
    maybe = (r_hi > OUTLIER_THRESHOLD) | (r_lo < -OUTLIER_THRESHOLD)
    return sure, maybe


def _deviation_ranges(r_lo, r_hi):
    """Range of the median residual, and each row's nearest and farthest absolute deviation.

    The median is monotone in every residual, so it lies between the medians of the lower
    and of the upper ends; each absolute deviation then lies between its nearest and
    farthest values over both intervals.
    """
    m_lo, m_hi = np.median(r_lo), np.median(r_hi)
    nearest = np.maximum(0.0, np.maximum(r_lo - m_hi, m_lo - r_hi))
    farthest = np.maximum(r_hi - m_lo, m_hi - r_lo)
    return m_lo, m_hi, nearest, farthest


def _score_bounds(scoring, z, lo, hi) -> tuple[float, float]:
    """Lowest and highest score when each prediction may lie anywhere in [lo, hi]."""
    r_lo, r_hi = normalised_residual(z, lo), normalised_residual(z, hi)
    if scoring == "eta":
        sure, maybe = _outlier_sides(r_lo, r_hi)
        return -float(np.mean(maybe)), -float(np.mean(sure))
    _, _, nearest, farthest = _deviation_ranges(r_lo, r_hi)
    return -NMAD_SCALE * float(np.median(farthest)), -NMAD_SCALE * float(np.median(nearest))


def _undecided_rows(scoring, z, lo, hi, open_rows) -> np.ndarray:
    """Open rows whose exact value could still change the score, given every row's bounds.

    For the outlier fraction, those that may fall on either side of the threshold. For
    NMAD, those that may reach the range of the median residual or the range of the median
    absolute deviation: the others stay on the same side of both medians whatever their
    ties do, so the score is fixed once no row is undecided.
    """
    r_lo = normalised_residual(z, lo) - BOUND_MARGIN
    r_hi = normalised_residual(z, hi) + BOUND_MARGIN
    if scoring == "eta":
        sure, maybe = _outlier_sides(r_lo, r_hi)
        return np.flatnonzero(open_rows & maybe & ~sure)
    m_lo, m_hi, nearest, farthest = _deviation_ranges(r_lo, r_hi)
    d_lo, d_hi = np.median(nearest), np.median(farthest)
    return np.flatnonzero(open_rows & (((r_hi >= m_lo) & (r_lo <= m_hi)) | ((farthest >= d_lo) & (nearest <= d_hi))))


class _SklearnNeighbours:
    """The neighbours KNeighborsRegressor(n_neighbors=k) finds, tie-breaking included.

    Where scikit-learn's "auto" picks a KD-tree (at most 15 features, k below half the
    training set) the tree is queried directly, which is what the regressor does inside.
    """

    def __init__(self, x_train, columns, k):
        self.columns, self.k = columns, k
        x_fit = np.ascontiguousarray(x_train[:, columns])
        if columns.size <= 15 and k < x_fit.shape[0] // 2:
            self.tree = KDTree(x_fit, leaf_size=30)
        else:
            self.tree = KNeighborsRegressor(n_neighbors=k).fit(x_fit, np.zeros(x_fit.shape[0]))

    def kneighbors(self, x_test):
        x_query = np.ascontiguousarray(x_test[:, self.columns])
        if isinstance(self.tree, KDTree):
            return self.tree.query(x_query, k=self.k, return_distance=False)
        return self.tree.kneighbors(x_query, return_distance=False)


class _Fold:
    """One fold's data, and every training column sorted (made once, serves every step)."""

    def __init__(self, X, y, train, test):
        self.x_train, self.y_train = np.ascontiguousarray(X[train]), np.ascontiguousarray(y[train])
        self.x_test, self.y_test = np.ascontiguousarray(X[test]), np.ascontiguousarray(y[test])
        self.train_t = np.ascontiguousarray(self.x_train.T)
        # order[f]: training points sorted by feature f; values[f]: the sorted values;
        # rank[f, i]: the place of point i in that order; qpos[q, f]: test row q's place.
        self.order, self.values, self.rank, self.qpos = _knn.sort_columns(self.train_t, self.x_test)


def _neighbour_values(fold, selected, candidates, k, mode, backend, pool_size, device):
    """Every test row's value (mean z, or CRPS) per candidate, its bounds and its tie status."""
    shape = (fold.x_test.shape[0], candidates.size)
    value, lo, hi = np.empty(shape), np.empty(shape), np.empty(shape)
    status = np.empty(shape, dtype=np.int8)
    cand = candidates.astype(np.int64)
    if backend == "torch":
        idx, status = _neighbours_torch(fold.x_train, fold.x_test, selected, candidates, k, device())
        neighbours_z = fold.y_train[idx]  # (test, candidates, k), nearest first
        value = (crps_per_object(np.repeat(fold.y_test, candidates.size), neighbours_z.reshape(-1, k))
                 .reshape(shape) if mode else np.mean(neighbours_z, axis=2))
        return value, value, value, status
    if selected.size == 0:
        _knn.knn_line(fold.x_test, fold.values, fold.order, fold.qpos, fold.y_train, fold.y_test, cand, k,
                      TIE_EPS, mode, value, lo, hi, status)
    elif selected.size == 1:
        # Strips about half the k-th neighbour distance wide: a few strips per query.
        g = max(1, int(2 * np.sqrt(fold.x_train.shape[0] / k)))
        _knn.knn_strips(fold.x_test, fold.train_t, fold.rank, fold.values, fold.order, fold.qpos, fold.y_train,
                        fold.y_test, int(selected[0]), cand, g, k, TIE_EPS, mode, value, lo, hi, status)
    else:
        xt_sel = np.ascontiguousarray(fold.x_train[:, selected])
        xq_sel = np.ascontiguousarray(fold.x_test[:, selected])
        n_train = fold.x_train.shape[0]
        if pool_size is None:
            # Several times the selected-space points expected inside the k-th neighbour
            # distance of the (s+1)-dimensional space: the pool settles nearly every pair.
            pool_size = 4 * n_train * (k / n_train) ** (selected.size / (selected.size + 1))
        size = int(min(max(pool_size, k + 1), n_train))
        pool = cKDTree(xt_sel).query(xq_sel, k=size, workers=numba.get_num_threads())[1].astype(np.int64).reshape(-1, size)
        _knn.knn_pool(pool, xq_sel, xt_sel, fold.x_test, fold.x_train, fold.y_train, fold.y_test, fold.values,
                      fold.order, fold.qpos, cand, k, TIE_EPS, mode, _knn.sorting_network(k + 1), value, status)
        lo, hi = value, value
    return value, lo, hi, status


def _neighbours_torch(x_train, x_test, selected, candidates, k, device):
    """Brute force on ``device``: one (test x train) distance matrix, plus one term per candidate."""
    import torch

    xt = torch.as_tensor(x_train, dtype=torch.float64, device=device)
    n_test = x_test.shape[0]
    idx = np.empty((n_test, candidates.size, k), dtype=np.int64)
    status = np.empty((n_test, candidates.size), dtype=np.int8)
    # Rows of the test set per block, so that a block's distance matrix stays near 256 MB.
    block = max(1, (1 << 25) // max(1, x_train.shape[0]))
    for start in range(0, n_test, block):
        xq = torch.as_tensor(x_test[start:start + block], dtype=torch.float64, device=device)
        d_sel = torch.zeros(xq.shape[0], xt.shape[0], dtype=torch.float64, device=device)
        for f in selected:
            d_sel += (xq[:, f, None] - xt[None, :, f]) ** 2
        for j, c in enumerate(candidates):
            d = d_sel + (xq[:, c, None] - xt[None, :, c]) ** 2
            top = min(k + 1, xt.shape[0])
            values, neighbours = torch.topk(d, top, dim=1, largest=False, sorted=True)
            certain = values[:, top - 1] > values[:, k - 1] * (1.0 + TIE_EPS) if top > k else torch.ones_like(values[:, 0], dtype=torch.bool)
            idx[start:start + xq.shape[0], j] = neighbours[:, :k].cpu().numpy()
            status[start:start + xq.shape[0], j] = np.where(certain.cpu().numpy(), _knn.CERTAIN, _knn.TIE_UNBOUNDED)
    return idx, status


def selection_frequency(X, y, n_features: int, *, n_resamples: int = 10, size: int | None = None,
                        seed: int = 0, **selector_params) -> Counter:
    """How often each feature is selected over resamples of the data (without replacement).

    Each resample draws ``size`` rows (default: half of them) and runs a
    :class:`ForwardSelector` for ``n_features`` steps on its own shuffled 3-fold split.

    Returns
    -------
    collections.Counter
        Feature index -> number of resamples that selected it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 5)); z = 1 + 0.3 * X[:, 1]
    >>> selection_frequency(X, z, 1, n_resamples=3, n_neighbors=5)[1]
    3
    """
    from sklearn.model_selection import KFold

    X, _ = _as_array(X)
    y = np.asarray(y, float)
    size = size or len(X) // 2
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    for b in range(n_resamples):
        rows = rng.choice(len(X), size=size, replace=False)
        selector = ForwardSelector(n_features, cv=KFold(3, shuffle=True, random_state=seed + b), **selector_params)
        counts.update(int(i) for i in selector.fit(X[rows], y[rows]).selected_)
    return counts
