"""Exact k-nearest-neighbour kernels of the forward selection (numba).

Each kernel finds, for every query and every candidate feature, the k nearest training
points in the space "selected features + that candidate", and certifies the answer: it is
CERTAIN only when the k-th and (k+1)-th squared distances differ by more than a relative
``eps`` (so no rounding or tie can change the neighbour set), TIE when they do not (the
caller then asks scikit-learn's own tree, which breaks ties its way), NEED_MORE when the
pool of candidates it was given was too small to be sure.
"""

from __future__ import annotations

import numba as nb
import numpy as np

CERTAIN, NEED_MORE, TIE = 0, 1, 2


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
def knn_1d(train_sorted, order, queries, k, eps, out_idx, status):
    """k nearest neighbours on one feature: a two-pointer walk out from each query's rank.

    ``train_sorted`` is the training column sorted, ``order`` the argsort that sorted it.
    Writes ``out_idx[q, :k]`` (nearest first) and ``status[q]``.
    """
    n = train_sorted.size
    best_d = np.empty(k + 1)
    best_i = np.empty(k + 1, dtype=np.int64)
    for q in range(queries.size):
        x = queries[q]
        hi = np.searchsorted(train_sorted, x)
        lo = hi - 1
        count = 0
        best_d[:] = np.inf
        while count < k + 1 and (lo >= 0 or hi < n):
            if hi >= n:
                take_lo = True
            elif lo < 0:
                take_lo = False
            else:
                tl = x - train_sorted[lo]
                th = x - train_sorted[hi]
                take_lo = tl * tl <= th * th
            if take_lo:
                t = x - train_sorted[lo]
                best_d[count] = t * t
                best_i[count] = order[lo]
                lo -= 1
            else:
                t = x - train_sorted[hi]
                best_d[count] = t * t
                best_i[count] = order[hi]
                hi += 1
            count += 1
        for j in range(k):
            out_idx[q, j] = best_i[j]
        status[q] = CERTAIN if best_d[k] > best_d[k - 1] * (1.0 + eps) else TIE


@nb.njit(cache=True)
def knn_pool(pool, xq_sel, xt_sel, xq_cand, xt_cand, todo, k, eps, full, out_idx, status):
    """k nearest neighbours in "selected + candidate" space, scanning a pool of candidates.

    ``pool[q]`` lists training points in increasing distance from query ``q`` in the
    selected space (a KD-tree's answer). Adding a feature only lengthens distances, so once
    the next pool point is already farther in the selected space than the current k-th
    best, no later point (in the pool or beyond it) can enter: the scan stops, CERTAIN.
    Running out of pool first gives NEED_MORE, unless ``full`` (the pool is every point).
    """
    nq, m_pool = pool.shape
    n_cand = xq_cand.shape[1]
    n_sel = xq_sel.shape[1]
    d_sel = np.empty(m_pool)
    # One query's distances, pool point by pool point: rows of xt_cand are contiguous.
    d_cand = np.empty((m_pool, n_cand))
    best_d = np.empty(k + 1)
    best_i = np.empty(k + 1, dtype=np.int64)
    for q in range(nq):
        busy = False
        for c in range(n_cand):
            if todo[q, c]:
                busy = True
                break
        if not busy:
            continue
        for m in range(m_pool):
            acc = 0.0
            p = pool[q, m]
            for j in range(n_sel):
                t = xq_sel[q, j] - xt_sel[p, j]
                acc += t * t
            d_sel[m] = acc
            for c in range(n_cand):
                t = xq_cand[q, c] - xt_cand[p, c]
                d_cand[m, c] = acc + t * t
        for c in range(n_cand):
            if not todo[q, c]:
                continue
            best_d[:] = np.inf
            best_i[:] = -1
            stopped = False
            for m in range(m_pool):
                if d_sel[m] > best_d[k - 1] * (1.0 + 2.0 * eps) and best_d[k] > best_d[k - 1] * (1.0 + eps):
                    stopped = True
                    break
                d = d_cand[m, c]
                if d < best_d[k]:
                    _insert(best_d, best_i, d, pool[q, m])
            if stopped or full:
                for j in range(k):
                    out_idx[q, c, j] = best_i[j]
                status[q, c] = CERTAIN if best_d[k] > best_d[k - 1] * (1.0 + eps) else TIE
            else:
                status[q, c] = NEED_MORE


@nb.njit(cache=True)
def knn_walk(sorted_f, order_f, xq_f, xq_sel, xt_sel, xq_cand, xt_cand, todo, k, eps, out_idx, status):
    """k nearest neighbours in "selected + candidate" space, walking out along one feature.

    The training points are visited in increasing distance from the query along one
    selected feature ``f`` (``sorted_f``/``order_f``: that column sorted and its argsort;
    ``xq_f``: the queries' values). The squared gap along ``f`` is a lower bound of the full
    distance, so a candidate's walk stops once it exceeds the k-th best: exact, whatever the
    pool. The walk is shared by all candidates of a query; each goes as far as it needs.
    """
    n = sorted_f.size
    nq = xq_f.size
    n_cand = xq_cand.shape[1]
    n_sel = xq_sel.shape[1]
    walk_i = np.empty(n, dtype=np.int64)
    walk_d = np.empty(n)
    walk_lb = np.empty(n)
    best_d = np.empty(k + 1)
    best_i = np.empty(k + 1, dtype=np.int64)
    for q in range(nq):
        busy = False
        for c in range(n_cand):
            if todo[q, c]:
                busy = True
                break
        if not busy:
            continue
        x = xq_f[q]
        hi = np.searchsorted(sorted_f, x)
        lo = hi - 1
        filled = 0
        for c in range(n_cand):
            if not todo[q, c]:
                continue
            best_d[:] = np.inf
            best_i[:] = -1
            xc = xq_cand[q, c]
            m = 0
            while True:
                if m == filled:
                    if lo < 0 and hi >= n:
                        break
                    # Extend the shared walk by one point (the nearer side along f).
                    if hi >= n:
                        take_lo = True
                    elif lo < 0:
                        take_lo = False
                    else:
                        tl = x - sorted_f[lo]
                        th = x - sorted_f[hi]
                        take_lo = tl * tl <= th * th
                    if take_lo:
                        t = x - sorted_f[lo]
                        p = order_f[lo]
                        lo -= 1
                    else:
                        t = x - sorted_f[hi]
                        p = order_f[hi]
                        hi += 1
                    acc = 0.0
                    for j in range(n_sel):
                        u = xq_sel[q, j] - xt_sel[p, j]
                        acc += u * u
                    walk_i[filled] = p
                    walk_d[filled] = acc
                    walk_lb[filled] = t * t
                    filled += 1
                if walk_lb[m] > best_d[k - 1] * (1.0 + 2.0 * eps) and best_d[k] > best_d[k - 1] * (1.0 + eps):
                    break
                t = xc - xt_cand[walk_i[m], c]
                d = walk_d[m] + t * t
                if d < best_d[k]:
                    _insert(best_d, best_i, d, walk_i[m])
                m += 1
            for j in range(k):
                out_idx[q, c, j] = best_i[j]
            status[q, c] = CERTAIN if best_d[k] > best_d[k - 1] * (1.0 + eps) else TIE
