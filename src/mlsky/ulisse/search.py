"""One-shot similarity search: nearest neighbours of a prototype, and recursive expansion.

:class:`SimilaritySearch` holds an (N, D) feature matrix and answers k-nearest-neighbour
queries. Below ``index_threshold`` rows it is exact, in batches on the torch device (one
matrix product + ``topk``) or with faiss's flat indexes; above, it builds a faiss inverted-file
index (``IVF``, exact distances within the probed lists) and calibrates how many lists to probe
so that the recall of the ``n_neighbors`` nearest, measured on rows of the data at build time,
reaches ``recall_target``. Which of the two ran is in ``method_``. The index can be saved next
to the features and is rebuilt when it does not match them. Distances: Euclidean as the paper,
cosine, or Euclidean after standardising each feature (zero mean, unit variance over the
sample), which stops a few high-variance channels from deciding alone.

Examples
--------
>>> import numpy as np
>>> from mlsky.ulisse.search import SimilaritySearch
>>> X = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
>>> search = SimilaritySearch(n_neighbors=3).fit(X)
>>> distances, indices = search.kneighbors(indices=[0])
>>> indices.shape, bool(0 in indices[0])
((1, 3), False)
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from astropy.table import Table
from sklearn.base import BaseEstimator

from mlsky.config import get_device

METRICS = ("euclidean", "cosine", "standardised")
BACKENDS = ("torch", "faiss")
INDEXES = ("auto", "exact", "ivf")
#: Rows of the data used as queries to calibrate an IVF index's probes at build time.
CALIBRATION_QUERIES = 256


class SimilaritySearch(BaseEstimator):
    """Exact k-nearest-neighbour search in a feature space (ULISSE's retrieval step).

    Parameters
    ----------
    n_neighbors
        Neighbours returned per query.
    metric
        ``"euclidean"`` (the paper), ``"cosine"`` or ``"standardised"`` (Euclidean on features
        scaled to zero mean and unit variance over the fitted sample).
    backend
        For exact search: ``"torch"`` (batched on the device) or ``"faiss"`` (needs
        ``faiss-cpu``).
    batch_size
        Queries per batch (bounds memory at ``batch_size * N`` distances).
    index
        ``"auto"`` (exact below ``index_threshold`` rows, an IVF index from there on when
        faiss is installed), ``"exact"`` or ``"ivf"``.
    index_threshold
        Rows from which ``index="auto"`` builds an IVF index.
    recall_target
        Recall of the ``n_neighbors`` nearest that the IVF probes are calibrated to reach.

    Attributes
    ----------
    X_ : torch.Tensor
        The transformed feature matrix on the device.
    ids_ : numpy.ndarray
        Identifier of each row.
    mean_, scale_ : numpy.ndarray
        The standardisation (``metric="standardised"``; zeros and ones otherwise).
    method_ : str
        What answers the queries: exact search, or the IVF index with its probes and the
        recall measured when it was built.
    """

    def __init__(self, n_neighbors: int = 50, metric: str = "euclidean", backend: str = "torch",
                 batch_size: int = 1024, index: str = "auto", index_threshold: int = 200_000,
                 recall_target: float = 0.98):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.backend = backend
        self.batch_size = batch_size
        self.index = index
        self.index_threshold = index_threshold
        self.recall_target = recall_target

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.metric == "standardised":  # no copy otherwise: at a million rows that is gigabytes
            X = (X - self.mean_) / self.scale_
        if self.metric == "cosine":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return X.astype(np.float32)

    def fit(self, X: np.ndarray, y=None, ids: Sequence[str] | None = None,
            index_file: str | Path | None = None) -> "SimilaritySearch":
        """Index the feature matrix ``X`` (N, D); ``ids`` name its rows (default: row numbers).

        Parameters
        ----------
        index_file
            Where an IVF index is kept (an ``.npz``): read back when it was built for these very
            features and settings, else built (again, with a warning that says why) and saved.

        Raises
        ------
        ValueError
            For an unknown metric/backend/index, a matrix that is not 2-D, holds NaN/inf, or ids
            of another length.
        """
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}; use one of {', '.join(METRICS)}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; use one of {', '.join(BACKENDS)}.")
        if self.index not in INDEXES:
            raise ValueError(f"index={self.index!r}; use one of {', '.join(INDEXES)}.")
        if not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors={self.n_neighbors!r}; use a positive number of neighbours.")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"features must be a non-empty (N, D) matrix; got shape {X.shape}.")
        if not np.isfinite(X).all():
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
            raise ValueError(f"features hold NaN or inf in {len(bad)} rows (first: row {bad[0]}).")
        if ids is not None and len(ids) != len(X):
            raise ValueError(f"{len(ids)} ids for {len(X)} feature rows.")
        self.ids_ = np.asarray(ids if ids is not None else np.arange(len(X))).astype(str)
        if self.metric == "standardised":
            self.mean_, self.scale_ = X.mean(axis=0), np.maximum(X.std(axis=0), 1e-6)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1], np.float32), np.ones(X.shape[1], np.float32)
        prepared = self._prepare(X)
        self.device_ = get_device()
        self.X_ = torch.from_numpy(prepared).to(self.device_)
        self.sq_norms_ = (self.X_ * self.X_).sum(dim=1)
        self.ivf_ = self.index_ = None
        if self._wants_ivf(len(X)):
            self._fit_ivf(prepared, index_file)
        else:
            if self.backend == "faiss":
                faiss = _import_faiss("backend='faiss'")
                self.index_ = (faiss.IndexFlatIP if self.metric == "cosine" else faiss.IndexFlatL2)(X.shape[1])
                self.index_.add(prepared)
            self.method_ = f"exact ({self.backend}) over {len(X):,} vectors"
        return self

    def _wants_ivf(self, n: int) -> bool:
        if self.index == "exact" or (self.index == "auto" and n < self.index_threshold):
            return False
        try:
            _import_faiss("index='ivf'")
        except ImportError:
            if self.index == "ivf":
                raise
            warnings.warn(f"{n:,} vectors call for an IVF index, but faiss is not installed "
                          "(pip install 'mlsky[faiss]'); searching exactly.", stacklevel=3)
            return False
        return True

    def _fingerprint(self, prepared: np.ndarray) -> str:
        """What an index is valid for: these very vectors, metric, neighbours and recall target."""
        digest = hashlib.blake2b(np.ascontiguousarray(prepared).data, digest_size=16).hexdigest()
        return f"{prepared.shape}|{self.metric}|k={self.n_neighbors}|recall={self.recall_target}|{digest}"

    def _fit_ivf(self, prepared: np.ndarray, index_file: str | Path | None) -> None:
        faiss = _import_faiss("index='ivf'")
        fingerprint = self._fingerprint(prepared)
        if index_file is not None and Path(index_file).is_file():
            try:
                with np.load(index_file, allow_pickle=False) as data:
                    stored = {k: data[k] for k in data.files}
                ok = str(stored["fingerprint"]) == fingerprint
            except Exception as err:  # a damaged index is rebuilt, never trusted
                ok, stored = False, {}
                warnings.warn(f"{index_file}: unreadable index ({type(err).__name__}: {err}); rebuilding it.",
                              stacklevel=3)
            if ok:
                self.ivf_ = faiss.deserialize_index(stored["index"])
                self.nprobe_, self.recall_ = int(stored["nprobe"]), float(stored["recall"])
                self.method_ = f"{stored['method']} (read from {index_file})"
                return
            if stored:
                warnings.warn(f"{index_file}: the index was built for other features or settings; rebuilding it.",
                              stacklevel=3)
        n, d = prepared.shape
        nlist = max(1, min(2 ** round(math.log2(2 * math.sqrt(n))), n // 39))  # faiss wants >= 39 points a list
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        quantizer = (faiss.IndexFlatIP if self.metric == "cosine" else faiss.IndexFlatL2)(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
        rng = np.random.default_rng(0)
        train = prepared[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
        ivf.train(train)
        ivf.add(prepared)
        self.ivf_ = ivf
        # The fewest lists whose recall of the k nearest, on rows of the data, reaches the target
        # with a margin for those rows being a sample (its lower 95% bound must reach it):
        # doubling until it does, then halving the interval down to a sixteenth.
        queries = np.sort(rng.choice(n, size=min(n, CALIBRATION_QUERIES), replace=False))
        k = min(self.n_neighbors, n - 1)
        _, exact = self._exact(prepared[queries], k + 1)

        def recall_at(nprobe: int) -> tuple[float, bool]:
            ivf.nprobe = nprobe
            _, found = ivf.search(prepared[queries], k + 1)
            each = np.array([len(set(a[a != q]) & set(b[b != q])) / k for a, b, q in zip(found, exact, queries)])
            bound = each.mean() - 1.645 * each.std(ddof=1) / np.sqrt(len(each)) if len(each) > 1 else each.mean()
            return float(each.mean()), bool(bound >= self.recall_target)

        nprobe, (recall, enough) = 1, recall_at(1)
        while not enough and nprobe < nlist:
            nprobe = min(2 * nprobe, nlist)
            recall, enough = recall_at(nprobe)
        low = nprobe // 2  # known not to be enough (or 0)
        while enough and nprobe - low > max(1, nprobe // 16):
            middle = (low + nprobe) // 2
            r, ok = recall_at(middle)
            if ok:
                nprobe, recall = middle, r
            else:
                low = middle
        self.nprobe_, self.recall_ = nprobe, recall
        self.method_ = (f"faiss IVF{nlist},Flat over {n:,} vectors, {nprobe} of {nlist} lists probed "
                        f"(recall@{k} {recall:.3f} on {len(queries)} rows at build)")
        if index_file is not None:
            from mlsky.ulisse.features import atomic_savez

            atomic_savez(Path(index_file), {"index": faiss.serialize_index(ivf), "fingerprint": np.array(fingerprint),
                                            "nprobe": np.array(nprobe), "recall": np.array(recall),
                                            "method": np.array(self.method_)})

    def _exact(self, Q: np.ndarray, k_all: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest of prepared queries (distances in the metric), closest first."""
        if self.index_ is not None:
            dist, idx = self.index_.search(Q, k_all)
            return (1 - dist if self.metric == "cosine" else np.sqrt(np.maximum(dist, 0))), idx
        dists, idxs = [], []
        with torch.inference_mode():
            for start in range(0, len(Q), self.batch_size):
                q = torch.from_numpy(Q[start:start + self.batch_size]).to(self.device_)
                if self.metric == "cosine":
                    dd, ii = torch.topk(q @ self.X_.T, k_all, dim=1, largest=True, sorted=True)
                    dd = 1 - dd
                else:
                    # |q - x|^2 = |q|^2 - 2 q.x + |x|^2 in one matrix product; the square
                    # root is taken only of the k kept, and rounding below 0 is clipped.
                    d2 = torch.addmm(self.sq_norms_[None, :], q, self.X_.T, alpha=-2)
                    d2 += (q * q).sum(dim=1, keepdim=True)
                    dd, ii = torch.topk(d2, k_all, dim=1, largest=False, sorted=True)
                    dd = dd.clamp_min(0).sqrt()
                dists.append(dd.cpu().numpy())
                idxs.append(ii.cpu().numpy())
        return np.concatenate(dists), np.concatenate(idxs)

    def _search(self, Q: np.ndarray, k: int, exclude: np.ndarray | None,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        extra = 1 if exclude is not None else 0
        k_all = min(k + extra, len(self.ids_))
        if self.ivf_ is not None and not exact:
            self.ivf_.nprobe = self.nprobe_
            dist, idx = self.ivf_.search(Q, k_all)
            dist = 1 - dist if self.metric == "cosine" else np.sqrt(np.maximum(dist, 0))
            short = np.flatnonzero((idx < 0).any(axis=1))
            if len(short):  # the probed lists held fewer than k vectors: answer those exactly
                dist[short], idx[short] = self._exact(Q[short], k_all)
        else:
            dist, idx = self._exact(Q, k_all)
        if exclude is None:
            return dist[:, :k], idx[:, :k]
        # Drop each query's own row (it need not come first when duplicates tie at distance 0).
        keep = idx != exclude[:, None]
        out_d = np.stack([d[m][:k] for d, m in zip(dist, keep)])
        out_i = np.stack([i[m][:k] for i, m in zip(idx, keep)])
        return out_d, out_i

    def kneighbors(self, X: np.ndarray | None = None, *, indices: Sequence[int] | None = None,
                   n_neighbors: int | None = None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Distances and row indices of the nearest neighbours, closest first.

        Give either new feature vectors ``X`` (M, D) or ``indices`` of fitted rows; a fitted row
        is never returned as its own neighbour. ``exact=True`` searches exactly even when an
        IVF index was built (to measure its recall).

        Raises
        ------
        ValueError
            If both or neither of ``X`` and ``indices`` are given, or an index is out of range.
        """
        k = n_neighbors or self.n_neighbors
        if (X is None) == (indices is None):
            raise ValueError("give either feature vectors X or indices of fitted rows, not both.")
        if indices is not None:
            indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
            if len(indices) and (indices.min() < 0 or indices.max() >= len(self.ids_)):
                raise ValueError(f"index out of range for {len(self.ids_)} fitted rows.")
            if k >= len(self.ids_):
                raise ValueError(f"n_neighbors={k} needs more than {len(self.ids_)} fitted rows.")
            return self._search(self.X_[indices].cpu().numpy(), k, indices, exact)
        Q = np.atleast_2d(np.asarray(X, dtype=np.float32))
        if Q.shape[1] != self.X_.shape[1]:
            raise ValueError(f"query has {Q.shape[1]} features; the index has {self.X_.shape[1]}.")
        return self._search(self._prepare(Q), min(k, len(self.ids_)), None, exact)

    def index_of(self, ident: str) -> int:
        """Row index of the object called ``ident``.

        Raises
        ------
        KeyError
            If no fitted row has that id.
        """
        hits = np.flatnonzero(self.ids_ == str(ident))
        if len(hits) == 0:
            raise KeyError(f"no object with id {ident!r} among the {len(self.ids_)} fitted rows.")
        return int(hits[0])

    def query(self, prototype: int | str | np.ndarray, n_neighbors: int | None = None) -> Table:
        """The neighbours of one prototype (row index, id, or a feature vector) as a Table.

        Columns ``index``, ``id``, ``distance``, closest first.
        """
        if isinstance(prototype, np.ndarray):
            dist, idx = self.kneighbors(prototype[None], n_neighbors=n_neighbors)
        else:
            row = self.index_of(prototype) if isinstance(prototype, str) else int(prototype)
            dist, idx = self.kneighbors(indices=[row], n_neighbors=n_neighbors)
        return Table({"index": idx[0], "id": self.ids_[idx[0]], "distance": dist[0]})

    def expand(self, prototype: int | str, n_neighbors: int | None = None, iterations: int = 3,
               max_results: int | None = None) -> Table:
        """Recursive expansion: query with the prototype, then with everything found, repeatedly.

        Iteration 1 returns the prototype's ``n_neighbors``; iteration i queries every object
        first found in iteration i-1 and keeps neighbours not seen before. Each object is
        reported once, with the iteration that found it and its distance to the prototype.

        Parameters
        ----------
        max_results
            Stop adding objects once this many are found (the closest to the prototype kept).

        Returns
        -------
        astropy.table.Table
            Columns ``index``, ``id``, ``iteration``, ``distance`` (to the prototype), ordered by
            iteration then distance.
        """
        k = n_neighbors or self.n_neighbors
        row = self.index_of(prototype) if isinstance(prototype, str) else int(prototype)
        found: dict[int, int] = {row: 0}
        frontier = np.array([row])
        for iteration in range(1, iterations + 1):
            _, idx = self.kneighbors(indices=frontier, n_neighbors=k)
            new = [i for i in dict.fromkeys(idx.ravel().tolist()) if i not in found]
            if max_results is not None:
                room = max_results - (len(found) - 1)
                if len(new) > room:
                    d_new = self._distances_to(row, np.array(new))
                    new = [new[j] for j in np.argsort(d_new, kind="stable")[:room]]
            for i in new:
                found[i] = iteration
            frontier = np.array(new, dtype=np.int64)
            if len(frontier) == 0:
                break
        rows = np.array([i for i in found if i != row], dtype=np.int64)
        table = Table({"index": rows, "id": self.ids_[rows], "iteration": np.array([found[i] for i in rows]),
                       "distance": self._distances_to(row, rows)})
        table.sort(["iteration", "distance"])
        return table

    def _distances_to(self, row: int, rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            q = self.X_[row:row + 1]
            others = self.X_[torch.from_numpy(rows).to(self.device_)]
            d = 1 - (others @ q.T)[:, 0] if self.metric == "cosine" else torch.linalg.vector_norm(others - q, dim=1)
        return d.cpu().numpy()


def _import_faiss(what: str):
    try:
        import faiss
    except ImportError as err:
        raise ImportError(f"{what} needs faiss: pip install 'mlsky[faiss]'.") from err
    return faiss
