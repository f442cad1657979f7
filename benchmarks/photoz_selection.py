"""Benchmark: ForwardSelector against scikit-learn's SequentialFeatureSelector.

Both run the same forward selection (kNN regression, k=15, 3 unshuffled folds, scoring
-NMAD) on the same standardised DR5Q features, at the catalogue's native 22 features and
at the 203 features derived from them. Prints whether the selections are identical, the
speed-up and the peak memory of this process. Both use the machine as they do by default:
ForwardSelector runs its numba kernels on every core (NUMBA_NUM_THREADS), scikit-learn's
selector runs with n_jobs=None.

scikit-learn at 203 features takes about 8 minutes on 2 cores; ``--sklearn-steps S`` runs
it for the first S steps only (and ours too, for a like-for-like ratio), and the line says
so. By default both run the full selection.

    python benchmarks/photoz_selection.py                  # 20,000 quasars, 10 steps
    python benchmarks/photoz_selection.py --n 5000 --sklearn-steps 3
"""

from __future__ import annotations

import argparse
import resource
import time

import numba
import numpy as np
from sklearn.feature_selection import SequentialFeatureSelector
from sklearn.neighbors import KNeighborsRegressor

import mlsky
from mlsky.data.sdss import load_dr5q
from mlsky.photoz import SCORERS, ForwardSelector
from mlsky.photoz.features import dr5q_features


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(name: str, X: np.ndarray, z: np.ndarray, steps: int, k: int, folds: int) -> None:
    ours = ForwardSelector(steps, n_neighbors=k, cv=folds, scoring="nmad")
    ForwardSelector(3, n_neighbors=k, cv=folds).fit(X[:300, :6], z[:300])  # load every numba kernel
    t0 = time.perf_counter()
    ours.fit(X, z)
    t_ours = time.perf_counter() - t0
    peer = SequentialFeatureSelector(KNeighborsRegressor(n_neighbors=k), n_features_to_select=steps,
                                     direction="forward", cv=folds, scoring=SCORERS["nmad"])
    t0 = time.perf_counter()
    peer.fit(X, z)
    t_peer = time.perf_counter() - t0
    same = set(ours.selected_.tolist()) == set(np.flatnonzero(peer.support_).tolist())
    # The same selection on one thread, against the same scikit-learn time.
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    t0 = time.perf_counter()
    single = ForwardSelector(steps, n_neighbors=k, cv=folds, scoring="nmad").fit(X, z)
    t_single = time.perf_counter() - t0
    numba.set_num_threads(threads)
    assert list(single.selected_) == list(ours.selected_)
    print(f"[{name}] {X.shape[0]} quasars x {X.shape[1]} features, {steps} steps, k={k}, {folds}-fold: "
          f"selections {'IDENTICAL' if same else 'DIFFERENT'}; ForwardSelector {t_ours:.1f} s, "
          f"scikit-learn SFS {t_peer:.1f} s, speed-up {t_peer / t_ours:.1f}x "
          f"({ours.n_ties_} query/candidate pairs tied at the k-th neighbour, {ours.n_ties_settled_} of them "
          f"settled by scikit-learn's tree)")
    print(f"    ForwardSelector on 1 thread instead of {threads}: {t_single:.1f} s, speed-up {t_peer / t_single:.1f}x")
    if not same:
        print(f"    ours {sorted(ours.selected_.tolist())} vs scikit-learn {np.flatnonzero(peer.support_).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="quasars (training + validation folds)")
    parser.add_argument("--steps", type=int, default=10, help="features to select")
    parser.add_argument("--sklearn-steps", type=int, default=None,
                        help="steps for the derived-feature comparison (default: --steps)")
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()
    print(mlsky.describe())
    table = load_dr5q(args.n + 200, seed=0)
    for derived, label in ((False, "native"), (True, "derived")):
        space = dr5q_features(table, derived=derived)
        X = space.to_numpy()[: args.n]
        z = space.z[: args.n]
        X = (X - X.mean(axis=0)) / X.std(axis=0)
        steps = args.steps if not derived or args.sklearn_steps is None else args.sklearn_steps
        if steps < args.steps:
            label += f", first {steps} of {args.steps} steps only (scikit-learn too slow for all)"
        compare(label, X, z, steps, args.k, args.folds)
    print(f"peak memory (ru_maxrss, this process, both selectors): {peak_memory_mib():.0f} MiB")


if __name__ == "__main__":
    main()
