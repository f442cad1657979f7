"""ULISSE at the paper's scale: an IVF index against exact search over a million 1280-d vectors.

The vectors are drawn from a Gaussian with the mean and covariance of real features: the
``FeatureExtractor`` head features of ``--fit-images`` Galaxy Zoo cutouts. They have the
spectrum (and so the effective dimension) of ULISSE features, which is what an index's speed
and recall depend on, but no cluster structure: real features are easier to index, not harder.
(Uniform random vectors in 1280-d would be a test no index can pass and no survey produces.)

Printed: build time of the index (with the calibration of its probes), query latency of
``SimilaritySearch`` with the index and exactly (the same fitted rows as prototypes, as ULISSE
queries), batched and one query at a time, their ratios, and recall@k of the index against
exact search on those queries.

Run: ``MLSKY_DATA_DIR=/path/to/data python benchmarks/ulisse_index.py [--n 1000000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import mlsky
from mlsky.ulisse.data import load_galaxyzoo1
from mlsky.ulisse.features import FeatureExtractor
from mlsky.ulisse.search import SimilaritySearch


def galaxy_like_vectors(n: int, fit_images: int, seed: int = 0, chunk: int = 65_536) -> np.ndarray:
    """``n`` vectors from the Gaussian of real Galaxy Zoo head features (mean and covariance)."""
    real = FeatureExtractor(progress=True).extract(load_galaxyzoo1(n=fit_images, seed=seed)["path"]).features
    mean = real.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(real, rowvar=False))
    root = (eigvec * np.sqrt(np.clip(eigval, 0, None))).astype(np.float32)  # cov = root @ root.T
    rng = np.random.default_rng(seed)
    X = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, chunk):
        z = rng.standard_normal((min(chunk, n - start), real.shape[1]), dtype=np.float32)
        X[start:start + len(z)] = mean + z @ root.T
    return X


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors indexed")
    parser.add_argument("--fit-images", type=int, default=2000, help="real cutouts whose features set the Gaussian")
    parser.add_argument("--queries", type=int, default=200, help="prototypes (fitted rows) queried")
    parser.add_argument("--single", type=int, default=50, help="prototypes also queried one at a time")
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--recall-target", type=float, default=0.98)
    args = parser.parse_args()
    print(mlsky.describe())
    t0 = time.perf_counter()
    X = galaxy_like_vectors(args.n, args.fit_images)
    print(f"{args.n:,} x {X.shape[1]} vectors from the Gaussian of {args.fit_images} real Galaxy Zoo features "
          f"({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    search = SimilaritySearch(n_neighbors=args.k, index="ivf", recall_target=args.recall_target).fit(X)
    print(f"build: {time.perf_counter() - t0:.1f} s; {search.method_}")
    rows = np.random.default_rng(1).choice(args.n, size=min(args.queries, args.n), replace=False)
    search.kneighbors(indices=rows[:2])  # warm-up
    t0 = time.perf_counter()
    _, found = search.kneighbors(indices=rows)
    t_index = (time.perf_counter() - t0) / len(rows)
    t0 = time.perf_counter()
    _, exact = search.kneighbors(indices=rows, exact=True)
    t_exact = (time.perf_counter() - t0) / len(rows)
    recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, exact)])
    print(f"batched queries ({len(rows)} prototypes at once, k={args.k}): index {t_index * 1e3:.2f} ms, "
          f"exact {t_exact * 1e3:.2f} ms per query; {t_exact / t_index:.1f}x faster")
    # ULISSE asks about one prototype at a time: the latency of a single query, where exact
    # search must read every vector for one answer instead of sharing the pass with others.
    single = rows[:args.single]
    t0 = time.perf_counter()
    for row in single:
        search.kneighbors(indices=[row])
    t_index1 = (time.perf_counter() - t0) / len(single)
    t0 = time.perf_counter()
    for row in single:
        search.kneighbors(indices=[row], exact=True)
    t_exact1 = (time.perf_counter() - t0) / len(single)
    print(f"single queries ({len(single)} prototypes, one at a time, k={args.k}): index {t_index1 * 1e3:.2f} ms, "
          f"exact {t_exact1 * 1e3:.2f} ms per query; {t_exact1 / t_index1:.1f}x faster")
    print(f"recall@{args.k} of the index against exact search: {recall:.4f} (target {args.recall_target})")


if __name__ == "__main__":
    main()
