"""Exact k-nearest-neighbour kernels of the forward selection (numba, on every core).

For every query and every candidate feature a kernel finds the k nearest training points in
the space "selected features + that candidate" and writes the query's value: the mean of
the neighbours' redshifts (``mode=0``, summed nearest first, as ``KNeighborsRegressor``
does) or their CRPS (``mode=1``). It also certifies the neighbour set:

* CERTAIN -- the k-th and (k+1)-th squared distances differ by more than a relative ``eps``
  (far above rounding), so every exact k-NN search returns this set;
* TIE -- they do not: which of the equidistant points enter is up to the search's
  tie-breaking. The kernel then bounds the mean over every admissible choice (``lo``,
  ``hi``): the points nearer than the tie always enter, and the remaining places go to the
  lowest or the highest redshifts among the tied points;
* TIE_UNBOUNDED -- a tie for which no bound was computed (CRPS, or the pool search, where
  ties are rare); the caller must settle it exactly.

Three searches, by the number of selected features s:

* :func:`knn_line` (s = 0): a walk out from the query's rank in the sorted column;
* :func:`knn_strips` (s = 1): strips of the selected feature, each ordered by the candidate;
* :func:`knn_pool` (s >= 2): each query's nearest neighbours in the selected space, read
  in order for all candidates at once; the few candidates they cannot settle walk out along
  their own sorted column (Fagin's threshold algorithm).
"""

from __future__ import annotations

import numba as nb
import numpy as np

CERTAIN, TIE, TIE_UNBOUNDED = 0, 1, 2


def sorting_network(n: int) -> np.ndarray:
    """Compare-exchange pairs (i < j) that sort any n values: Batcher's odd-even merge sort."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@nb.njit(cache=True, parallel=True)
def sort_columns(train_t, x_test):
    """Every training column sorted (stable): order, sorted values, each point's rank, and
    each test row's place (first rank whose value is not below it)."""
    n_features, n = train_t.shape
    order = np.empty((n_features, n), dtype=np.int64)
    values = np.empty((n_features, n))
    rank = np.empty((n_features, n), dtype=np.int64)
    qpos = np.empty((x_test.shape[0], n_features), dtype=np.int64)
    for f in nb.prange(n_features):
        o = np.argsort(train_t[f], kind="mergesort")
        order[f] = o
        for r in range(n):
            values[f, r] = train_t[f, o[r]]
            rank[f, o[r]] = r
        qpos[:, f] = np.searchsorted(values[f], x_test[:, f])
    return order, values, rank, qpos


@nb.njit(cache=True, inline="always")
def _insert(best_d, best_i, d, i, base=0, width=0):
    # best_d[base : base + width] (all of it when width is 0) is sorted; an equal distance
    # goes after those already there (first seen wins). Offsets, not slices: a slice per
    # call costs more than the insertion in the pool search's inner loop.
    last = base + (width if width else best_d.size) - 1
    j = last
    while j > base and best_d[j - 1] > d:
        best_d[j] = best_d[j - 1]
        best_i[j] = best_i[j - 1]
        j -= 1
    best_d[j] = d
    best_i[j] = i


@nb.njit(cache=True)
def _value(y, best_i, k, mode, z):
    """Mean redshift of the neighbours (summed nearest first) or their CRPS against ``z``."""
    if mode == 0:
        s = 0.0
        for j in range(k):
            s += y[best_i[j]]
        return s / k
    s = np.sort(y[best_i[:k]])
    spread = 0.0
    pairs = 0.0
    for j in range(k):
        spread += abs(s[j] - z)
        pairs += (2.0 * j - k + 1.0) * s[j]
    return spread / k - pairs / (k * k)


@nb.njit(cache=True)
def _certify(best_d, best_i, y, k, mode, z, eps):
    """The query's value from its k nearest, and their status (TIE: the caller bounds it)."""
    v = _value(y, best_i, k, mode, z)
    if best_d[k] > best_d[k - 1] * (1.0 + eps):
        return v, CERTAIN
    return v, (TIE if mode == 0 else TIE_UNBOUNDED)


@nb.njit(cache=True)
def _band_bounds(band, n_band, sure_sum, n_sure, k, y_min, y_max):
    """Lowest and highest mean when the k - n_sure free places go to tied points.

    A band of at most ``band.size`` points gets the exact extremes (sums of its lowest and
    highest redshifts); a larger one (a feature with few distinct values) the bound from
    the smallest and largest redshift of all, which keeps the cost of a tie bounded.
    """
    free = k - n_sure
    if n_band > band.size:
        return (sure_sum + free * y_min) / k, (sure_sum + free * y_max) / k
    for i in range(1, n_band):  # insertion sort, in place: the band is scratch
        v = band[i]
        j = i
        while j > 0 and band[j - 1] > v:
            band[j] = band[j - 1]
            j -= 1
        band[j] = v
    low = sure_sum
    high = sure_sum
    for j in range(free):
        low += band[j]
        high += band[n_band - 1 - j]
    return low / k, high / k


@nb.njit(cache=True, parallel=True)
def knn_line(xq, sorted_vals, sorted_order, qpos, y, z_test, candidates, k, eps, mode, value, lo, hi, status):
    """Candidates alone (s = 0): the k+1 nearest lie in a window around the query's rank."""
    nq = xq.shape[0]
    n = sorted_vals.shape[1]
    y_min, y_max = y.min(), y.max()
    for c in nb.prange(candidates.size):
        f = candidates[c]
        vals = sorted_vals[f]
        order = sorted_order[f]
        best_i = np.empty(k + 1, dtype=np.int64)
        best_d = np.empty(k + 1)
        band = np.empty(4 * k)
        for q in range(nq):
            x = xq[q, f]
            up = qpos[q, f]
            down = up - 1
            for j in range(k + 1):
                dl = (x - vals[down]) ** 2 if down >= 0 else np.inf
                du = (x - vals[up]) ** 2 if up < n else np.inf
                if dl <= du:
                    best_i[j] = order[down]
                    best_d[j] = dl
                    down -= 1
                else:
                    best_i[j] = order[up]
                    best_d[j] = du
                    up += 1
            v, state = _certify(best_d, best_i, y, k, mode, z_test[q], eps)
            value[q, c] = lo[q, c] = hi[q, c] = v
            status[q, c] = state
            if state == TIE:
                dk = best_d[k - 1]
                # The window holds the sure points and part of the band; widen it over the rest.
                t_lo, t_hi = dk * (1.0 - eps), dk * (1.0 + eps)
                sure, n_sure, n_band = 0.0, 0, 0
                for p in range(down + 1, up):
                    if (x - vals[p]) ** 2 < t_lo:
                        sure += y[order[p]]
                        n_sure += 1
                    else:
                        band[n_band] = y[order[p]]
                        n_band += 1
                while down >= 0 and (x - vals[down]) ** 2 <= t_hi and n_band < band.size:
                    band[n_band] = y[order[down]]
                    n_band += 1
                    down -= 1
                while up < n and (x - vals[up]) ** 2 <= t_hi and n_band < band.size:
                    band[n_band] = y[order[up]]
                    n_band += 1
                    up += 1
                if n_band == band.size and ((down >= 0 and (x - vals[down]) ** 2 <= t_hi)
                                            or (up < n and (x - vals[up]) ** 2 <= t_hi)):
                    n_band += 1  # more tied points than the band holds
                lo[q, c], hi[q, c] = _band_bounds(band, n_band, sure, n_sure, k, y_min, y_max)


@nb.njit(cache=True)
def _axis_gap(x, lo_edge, hi_edge):
    # Squared distance from x to the interval [lo_edge, hi_edge].
    if x < lo_edge:
        return (lo_edge - x) ** 2
    if x > hi_edge:
        return (x - hi_edge) ** 2
    return 0.0


@nb.njit(cache=True)
def _strip_search(xa, xc, sq, g, a_min, a_max, start, sa, sc, sid, k, eps, best_d, best_i, y, band_on, t_lo, t_hi,
                  band, acc):
    """Visit strips outward from ``sq`` (nearest in ``a`` first); in each, walk out from the
    query's place in the candidate-sorted strip while the two gaps can still beat the k-th
    best. In band mode, sum the sure points into acc[0], count them in acc[1] and append
    the tied ones to ``band`` (count in acc[2]) instead."""
    left = sq
    right = sq + 1
    while True:
        gap_l = _axis_gap(xa, a_min[left], a_max[left]) if left >= 0 else np.inf
        gap_r = _axis_gap(xa, a_min[right], a_max[right]) if right < g else np.inf
        limit = t_hi if band_on else best_d[k - 1] * (1.0 + 2.0 * eps)
        if gap_l <= gap_r:
            s, gap = left, gap_l
            left -= 1
        else:
            s, gap = right, gap_r
            right += 1
        if gap == np.inf or gap > limit:
            break
        lo, hi = start[s], start[s + 1]
        # First place in the strip whose candidate value is >= xc.
        while lo < hi:
            mid = (lo + hi) // 2
            if sc[mid] < xc:
                lo = mid + 1
            else:
                hi = mid
        for direction in (-1, 1):
            i = lo - 1 if direction < 0 else lo
            while start[s] <= i < start[s + 1]:
                t = (xc - sc[i]) ** 2
                limit = t_hi if band_on else best_d[k - 1] * (1.0 + 2.0 * eps)
                if gap + t > limit:
                    break
                d = (xa - sa[i]) ** 2 + t
                if band_on:
                    if d < t_lo:
                        acc[0] += y[sid[i]]
                        acc[1] += 1.0
                    elif d <= t_hi:
                        if acc[2] < band.size:
                            band[int(acc[2])] = y[sid[i]]
                        acc[2] += 1.0
                elif d < best_d[k]:
                    _insert(best_d, best_i, d, sid[i])
                i += direction


@nb.njit(cache=True, parallel=True)
def knn_strips(xq, xt_t, rank_t, sorted_vals, sorted_order, qpos, y, z_test, a, candidates, g, k, eps, mode, value,
               lo, hi, status):
    """One selected feature ``a`` and each candidate (s = 1): strips of ``a``, sorted by the candidate.

    The strips split the ranks of ``a`` into g equal parts; within each, the points are
    ordered by the candidate (one pass over the candidate's sorted column). A query visits
    the strips nearest in ``a`` first and, in each, walks out from its own candidate value:
    a point's distance is at least its strip's gap in ``a`` plus its gap in the candidate,
    and both only grow along the walk, so the search stops as soon as their sum exceeds the
    k-th best (with the tie margin).
    """
    nq = xq.shape[0]
    n = xt_t.shape[1]
    y_min, y_max = y.min(), y.max()
    va = sorted_vals[a]
    start = np.empty(g + 1, dtype=np.int64)
    a_min = np.empty(g)
    a_max = np.empty(g)
    for s in range(g + 1):
        start[s] = (s * n + g - 1) // g  # the ranks r with r * g // n == s start here
    for s in range(g):
        a_min[s] = va[start[s]]
        a_max[s] = va[start[s + 1] - 1]
    for c in nb.prange(candidates.size):
        f = candidates[c]
        vc = sorted_vals[f]
        oc = sorted_order[f]
        fill = start[:-1].copy()
        sa = np.empty(n)
        sc = np.empty(n)
        sid = np.empty(n, dtype=np.int64)
        for r in range(n):
            p = oc[r]
            s = rank_t[a, p] * g // n
            slot = fill[s]
            fill[s] += 1
            sa[slot] = xt_t[a, p]
            sc[slot] = vc[r]
            sid[slot] = p
        best_i = np.empty(k + 1, dtype=np.int64)
        best_d = np.empty(k + 1)
        band = np.empty(4 * k)
        acc = np.zeros(3)
        for q in range(nq):
            xa = xq[q, a]
            xc = xq[q, f]
            sq = min(qpos[q, a] * g // n, g - 1)
            best_d[:] = np.inf
            best_i[:] = -1
            _strip_search(xa, xc, sq, g, a_min, a_max, start, sa, sc, sid, k, eps, best_d, best_i, y, False, 0.0,
                          0.0, band, acc)
            v, state = _certify(best_d, best_i, y, k, mode, z_test[q], eps)
            value[q, c] = lo[q, c] = hi[q, c] = v
            status[q, c] = state
            if state == TIE:
                dk = best_d[k - 1]
                acc[:] = 0.0
                _strip_search(xa, xc, sq, g, a_min, a_max, start, sa, sc, sid, k, eps, best_d, best_i, y, True,
                              dk * (1.0 - eps), dk * (1.0 + eps), band, acc)
                lo[q, c], hi[q, c] = _band_bounds(band, int(acc[2]), acc[0], int(acc[1]), k, y_min, y_max)


@nb.njit(cache=True, parallel=True)
def knn_pool(pool, xq_sel, xt_sel, xq, xt, y, z_test, sorted_vals, sorted_order, qpos, candidates, k, eps, mode,
             network, value, status):
    """Every candidate at once, query by query, from the query's pool in the selected space.

    The pool (a KD-tree's answer, nearest first) is read once per query, and each pool
    point's row of values (``xt``, the training matrix, row-major) serves every candidate still
    open. A candidate closes when the pool's next selected-space distance exceeds its k-th
    best (with the tie margin), since no later point can come nearer. Candidates the pool
    cannot close walk out along their own sorted column: a point outside the pool lies at
    least the pool's last selected-space distance plus its candidate gap away, and the walk
    meets those gaps in increasing order (Fagin's threshold algorithm). ``network`` is a
    sorting network for k+1 values (:func:`sorting_network`).
    """
    nq, m_pool = pool.shape
    n = xt.shape[0]
    nc = candidates.size
    n_sel = xq_sel.shape[1]
    w = k + 1
    for q in nb.prange(nq):
        # Candidate c's k+1 nearest so far are best_d[c*w : c*w + w], sorted.
        best_d = np.full(nc * w, np.inf)
        best_i = np.full(nc * w, -1, dtype=np.int64)
        last = np.full(nc, np.inf)  # distance of place k+1: the bar to enter
        limit = np.full(nc, np.inf)  # selected-space distance beyond which c is closed
        open_ = np.arange(nc)
        n_open = nc
        xc = np.empty(nc)
        for c in range(nc):
            xc[c] = xq[q, candidates[c]]
        # The first k+1 pool points enter every candidate's list: fill, then sort each list
        # with a branch-free network instead of k+1 insertions.
        for a in range(w):
            p = pool[q, a]
            ds = 0.0
            for j in range(n_sel):
                ds += (xq_sel[q, j] - xt_sel[p, j]) ** 2
            row = xt[p]
            for c in range(nc):
                best_d[c * w + a] = ds + (xc[c] - row[candidates[c]]) ** 2
                best_i[c * w + a] = p
        for c in range(nc):
            base = c * w
            for e in range(network.shape[0]):
                i = base + network[e, 0]
                j = base + network[e, 1]
                di, dj = best_d[i], best_d[j]
                ii, ij = best_i[i], best_i[j]
                swap = dj < di
                best_d[i] = dj if swap else di
                best_d[j] = di if swap else dj
                best_i[i] = ij if swap else ii
                best_i[j] = ii if swap else ij
            last[c] = best_d[base + k]
            limit[c] = best_d[base + k - 1] * (1.0 + 2.0 * eps)
        ds = 0.0
        for a in range(w, m_pool):
            p = pool[q, a]
            ds = 0.0
            for j in range(n_sel):
                ds += (xq_sel[q, j] - xt_sel[p, j]) ** 2
            row = xt[p]
            kept = 0
            for t in range(n_open):
                c = open_[t]
                if ds > limit[c]:
                    continue
                open_[kept] = c
                kept += 1
                d = ds + (xc[c] - row[candidates[c]]) ** 2
                if d < last[c]:
                    base = c * w
                    _insert(best_d, best_i, d, p, base, w)
                    last[c] = best_d[base + k]
                    limit[c] = best_d[base + k - 1] * (1.0 + 2.0 * eps)
            n_open = kept
            if n_open == 0:
                break
        if n_open > 0:
            edge = ds  # every point outside the pool is at least this far in the selected space
            marked = np.zeros(n, dtype=np.bool_)
            for a in range(m_pool):
                marked[pool[q, a]] = True
            for t in range(n_open):
                c = open_[t]
                f = candidates[c]
                vals = sorted_vals[f]
                order = sorted_order[f]
                x = xc[c]
                up = qpos[q, f]
                down = up - 1
                while True:
                    tl = (x - vals[down]) ** 2 if down >= 0 else np.inf
                    tu = (x - vals[up]) ** 2 if up < n else np.inf
                    gap = min(tl, tu)
                    if gap == np.inf or edge + gap > limit[c]:
                        break
                    if tl <= tu:
                        p = order[down]
                        down -= 1
                    else:
                        p = order[up]
                        up += 1
                    if marked[p]:
                        continue
                    d = gap
                    for j in range(n_sel):
                        d += (xq_sel[q, j] - xt_sel[p, j]) ** 2
                    if d < last[c]:
                        base = c * w
                        _insert(best_d, best_i, d, p, base, w)
                        last[c] = best_d[base + k]
                        limit[c] = best_d[base + k - 1] * (1.0 + 2.0 * eps)
        for c in range(nc):
            base = c * w
            value[q, c] = _value(y, best_i[base:base + w], k, mode, z_test[q])
            status[q, c] = CERTAIN if best_d[base + k] > best_d[base + k - 1] * (1.0 + eps) else TIE_UNBOUNDED
