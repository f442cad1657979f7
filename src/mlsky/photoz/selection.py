"""Forward feature selection with a kNN regressor ("feature addition", D'Isanto et al. 2018).

:class:`ForwardSelector` adds, one at a time, the feature whose addition gives the best
cross-validated score of a k-nearest-neighbour regression of the redshift. It selects the
same features as scikit-learn's

    SequentialFeatureSelector(KNeighborsRegressor(n_neighbors=k), direction="forward",
                              cv=cv, scoring=SCORERS[scoring])

(same folds, same scorer, ties between candidates broken towards the first column), but
finds the neighbours of every candidate without refitting a model per candidate and fold:

* first step: each candidate alone, by a walk out from the query's rank in the sorted
  column;
* two or three dimensions: scikit-learn's own KD-tree per candidate (nothing beats it
  there, and it is exact by construction);
* from four dimensions on: adding a feature only lengthens distances, so each query's
  nearest neighbours in the selected space (one KD-tree query per fold and step) and the
  training points ordered along the candidate alone form two sorted streams whose lower
  bounds add up; merging them stops as soon as no unseen point can enter the k nearest
  (Fagin's threshold algorithm, in :mod:`mlsky.photoz._knn`);
* a neighbour set is accepted only when the k-th and (k+1)-th distances differ by more
  than rounding could explain; an exact tie is handed to scikit-learn's own tree for that
  query, so the tie is broken the way scikit-learn breaks it;
* on a GPU (``backend="torch"``) the neighbours come from a brute-force distance matrix,
  updated with one squared term per candidate, with the same certification.

The scores equal ``cross_val_score(KNeighborsRegressor(k), X[:, subset], y, cv=cv,
scoring=SCORERS[scoring]).mean()`` to rounding (the tests compare every candidate at
1e-12), for up to 15 features (beyond that scikit-learn switches to brute force, whose
rounding of distances differs).

Examples
--------
>>> from mlsky.photoz import ForwardSelector
>>> selector = ForwardSelector(n_features_to_select=10, n_neighbors=15, cv=3)  # doctest: +SKIP
>>> selector.fit(X, z).selection_path_                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.model_selection import check_cv
from sklearn.neighbors import KDTree, KNeighborsRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

from mlsky.photoz import _knn
from mlsky.photoz.metrics import crps, eta, nmad

#: Relative gap below which two neighbour distances count as tied (far above rounding).
TIE_EPS = 1e-9
_POINT_METRICS = {"nmad": nmad, "eta": eta}


def _as_array(X) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(X, Table):
        return np.column_stack([np.asarray(X[c], dtype=np.float64) for c in X.colnames]), list(X.colnames)
    return X, None


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
    pool_size : int
        Least number of selected-space neighbours per query in the first stream (the
        kernel asks for more in few dimensions, where the k-th neighbour lies farther).
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
        excluded), the quantity maximised.
    n_ties_ : int
        Query/candidate pairs whose neighbour set was decided by scikit-learn's tie-breaking.

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
                 pool_size: int = 128, progress: bool = False):
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
            On non-finite values, an unknown scoring, too many features asked for, or a
            training fold with fewer objects than ``n_neighbors``.
        """
        X, names = _as_array(X)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, ensure_min_features=2)
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
        self.candidate_scores_, self.n_ties_ = [], 0
        steps = range(self.n_features_to_select)
        if self.progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="forward selection", unit="feature")
        # Sorted columns per fold, made once: they serve every step.
        columns = [_SortedColumns(X[train], X[test]) if backend == "tree" else None for train, test in folds]
        for _ in steps:
            candidates = np.flatnonzero(~mask)
            selected = np.flatnonzero(mask)
            scores = np.empty((candidates.size, len(folds)))
            for f, (train, test) in enumerate(folds):
                scores[:, f] = self._fold_scores(X[train], y[train], X[test], y[test], columns[f], selected,
                                                 candidates, backend)
            # The same reduction as cross_val_score(...).mean(), candidate by candidate.
            means = np.array([np.mean(row) for row in scores])
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

    def _fold_scores(self, x_train, y_train, x_test, y_test, columns, selected, candidates, backend) -> np.ndarray:
        """Score of every candidate on one fold (trained on ``x_train``, scored on ``x_test``)."""
        k = self.n_neighbors
        if backend == "torch":
            idx, status = _neighbours_torch(x_train, x_test, selected, candidates, k, self._device())
        elif 1 <= selected.size <= 2:
            # In 2 or 3 dimensions a tree per candidate beats the sorted streams; it is
            # scikit-learn's own tree, so its answer is exact by construction.
            idx = np.stack([_sklearn_neighbours(x_train, x_test, np.sort(np.append(selected, c)), k)
                            for c in candidates], axis=1)
            status = np.full(idx.shape[:2], _knn.CERTAIN, dtype=np.int8)
        else:
            idx, status = _neighbours_streams(x_train, x_test, columns, selected, candidates, k, self.pool_size)
        y_col = y_train.reshape(-1, 1)
        scores = np.empty(candidates.size)
        for j, c in enumerate(candidates):
            neighbours = idx[:, j, :]
            ties = np.flatnonzero(status[:, j] == _knn.TIE)
            if ties.size:
                # Leave equal distances to scikit-learn's own search, so ties break its way.
                neighbours = neighbours.copy()
                neighbours[ties] = _sklearn_neighbours(x_train, x_test[ties], np.sort(np.append(selected, c)), k)
                self.n_ties_ += int(ties.size)
            if self.scoring == "crps":
                scores[j] = -crps(y_test, y_train[neighbours])
            else:
                # The very expression of KNeighborsRegressor.predict, for the same rounding.
                prediction = np.mean(y_col[neighbours], axis=1).ravel()
                scores[j] = -_POINT_METRICS[self.scoring](y_test, prediction)
        return scores


def _sklearn_neighbours(x_train, x_test, columns, k):
    """The neighbours KNeighborsRegressor(n_neighbors=k) finds, tie-breaking included.

    Where scikit-learn's "auto" picks a KD-tree (at most 15 features, k below half the
    training set) the tree is queried directly, which is what the regressor does inside.
    """
    x_fit = np.ascontiguousarray(x_train[:, columns])
    x_query = np.ascontiguousarray(x_test[:, columns])
    if columns.size <= 15 and k < x_fit.shape[0] // 2:
        return KDTree(x_fit, leaf_size=30).query(x_query, k=k, return_distance=False)
    peer = KNeighborsRegressor(n_neighbors=k).fit(x_fit, np.zeros(x_fit.shape[0]))
    return peer.kneighbors(x_query, return_distance=False)


class _SortedColumns:
    """Every training column sorted, and each test row's rank in it (one fold, all steps)."""

    def __init__(self, x_train: np.ndarray, x_test: np.ndarray):
        self.train_t = np.ascontiguousarray(x_train.T)
        self.order = np.ascontiguousarray(np.argsort(x_train, axis=0, kind="stable").T)
        self.values = np.ascontiguousarray(np.take_along_axis(x_train, self.order.T, axis=0).T)
        self.ranks = np.ascontiguousarray(np.stack(
            [np.searchsorted(self.values[f], x_test[:, f]) for f in range(x_train.shape[1])], axis=1))


def _neighbours_streams(x_train, x_test, columns, selected, candidates, k, pool_size):
    """k nearest neighbours of every test row in every "selected + candidate" space (exact)."""
    xt_sel = np.ascontiguousarray(x_train[:, selected])
    xq_sel = np.ascontiguousarray(x_test[:, selected])
    if selected.size:
        n_train = x_train.shape[0]
        # Pool about 4x the selected-space points expected inside the k-th neighbour
        # distance of the (s+1)-dimensional space, so stream A settles most pairs.
        expected = n_train * (k / n_train) ** (selected.size / (selected.size + 1))
        size = int(min(max(pool_size, 4 * expected, k + 1), n_train))
        pool = cKDTree(xt_sel).query(xq_sel, k=size)[1].astype(np.int64).reshape(x_test.shape[0], size)
    else:
        pool = np.empty((x_test.shape[0], 0), dtype=np.int64)
    idx = np.empty((x_test.shape[0], candidates.size, k), dtype=np.int64)
    status = np.empty((x_test.shape[0], candidates.size), dtype=np.int8)
    _knn.knn_streams(pool, xq_sel, xt_sel, x_test, columns.train_t, candidates.astype(np.int64), columns.values,
                     columns.order, columns.ranks, k, TIE_EPS, idx, status)
    return idx, status


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
            status[start:start + xq.shape[0], j] = np.where(certain.cpu().numpy(), _knn.CERTAIN, _knn.TIE)
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
