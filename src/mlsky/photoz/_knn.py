"""Exact k-nearest-neighbour kernel of the forward selection (numba).

For every query and every candidate feature it finds the k nearest training points in the
space "selected features + that candidate" and certifies the answer: CERTAIN only when the
k-th and (k+1)-th squared distances differ by more than a relative ``eps`` (so neither
rounding nor a tie can change the neighbour set), TIE when they do not (the caller then
asks scikit-learn's own tree, which breaks ties its way).
"""

from __future__ import annotations

import numba as nb
import numpy as np

CERTAIN, TIE = 0, 2


@nb.njit(cache=True, inline="always")
def _insert(best_d, best_i, d, i):
    # best_d is sorted; an equal distance goes after those already there (first seen wins).
    j = best_d.size - 1
    while j > 0 and best_d[j - 1] > d:
        best_d[j] = best_d[j - 1]
        best_i[j] = best_i[j - 1]
        j -= 1
    best_d[j] = d
    best_i[j] = i


@nb.njit(cache=True)
def knn_streams(pool, xq_sel, xt_sel, xq, xt_t, candidates, sorted_vals, sorted_order, qpos, k, eps,
                out_idx, status):
    """k nearest neighbours in "selected + candidate" space from two sorted streams.

    Stream A is the query's pool of nearest neighbours in the selected space (a KD-tree's
    answer, nearest first); stream B walks out from the query along the candidate feature
    alone (``sorted_vals``/``sorted_order``: every training column sorted, ``qpos``: the
    queries' ranks in them). A point seen by neither has a selected-space distance of at
    least A's next value and a squared candidate gap of at least B's next value, so its
    distance is at least their sum: once that sum exceeds the k-th best, the answer is
    final (Fagin's threshold algorithm). A settles candidates that add little to the
    distance, B those that dominate it; A takes two turns for each of B's (A usually
    settles the pair). Every pair gets CERTAIN or TIE: B alone eventually visits every
    point.

    Candidates are the outer loop, so that one candidate's training column (``xt_t`` is the
    training matrix transposed), sorted values and order stay in cache for all queries.
    """
    nq, m_pool = pool.shape
    n = xt_t.shape[1]
    n_sel = xq_sel.shape[1]
    d_pool = np.empty((nq, m_pool))
    for q in range(nq):
        for m in range(m_pool):
            acc = 0.0
            p = pool[q, m]
            for j in range(n_sel):
                t = xq_sel[q, j] - xt_sel[p, j]
                acc += t * t
            d_pool[q, m] = acc
    seen = np.zeros(n, dtype=np.int64)
    stamp = 0
    best_d = np.empty(k + 1)
    best_i = np.empty(k + 1, dtype=np.int64)
    for c in range(candidates.size):
        f = candidates[c]
        vals = sorted_vals[f]
        order = sorted_order[f]
        column = xt_t[f]
        for q in range(nq):
            x = xq[q, f]
            stamp += 1
            best_d[:] = np.inf
            best_i[:] = -1
            a = 0
            hi = qpos[q, f]
            lo = hi - 1
            turn = 0  # A, A, B, A, A, B...
            while True:
                # Lower bounds of the two streams' next points.
                next_a = d_pool[q, a] if a < m_pool else (d_pool[q, m_pool - 1] if m_pool > 0 else 0.0)
                if lo >= 0:
                    tl = x - vals[lo]
                    tl = tl * tl
                else:
                    tl = np.inf
                if hi < n:
                    th = x - vals[hi]
                    th = th * th
                else:
                    th = np.inf
                next_b = min(tl, th)
                if next_b == np.inf:
                    break  # B has seen every point
                # No unseen point can enter the k nearest: the set is final (or a tie).
                if next_a + next_b > best_d[k - 1] * (1.0 + 2.0 * eps):
                    break
                if turn % 3 != 2 and a < m_pool:
                    p = pool[q, a]
                    t = x - column[p]
                    d = d_pool[q, a] + t * t
                    a += 1
                else:
                    if tl <= th:
                        p = order[lo]
                        t = x - vals[lo]
                        lo -= 1
                    else:
                        p = order[hi]
                        t = x - vals[hi]
                        hi += 1
                    ds = 0.0
                    for j in range(n_sel):
                        u = xq_sel[q, j] - xt_sel[p, j]
                        ds += u * u
                    d = ds + t * t
                turn += 1
                if seen[p] == stamp:
                    continue
                seen[p] = stamp
                if d < best_d[k]:
                    _insert(best_d, best_i, d, p)
            for j in range(k):
                out_idx[q, c, j] = best_i[j]
            status[q, c] = CERTAIN if best_d[k] > best_d[k - 1] * (1.0 + eps) else TIE
