"""The numba-compiled BM25 kernels; imported only through :func:`relevo.indexes.bm25_kernels.load`.

Module-level functions, so that numba's on-disk cache (``cache=True``) can key them.
"""

# mypy: ignore-errors
# ruff: noqa: ANN001, ANN202

from __future__ import annotations

import functools

import numba
import numpy as np

# Tuning constants: defined here, not imported, because numba freezes globals into
# the compiled code and invalidates its on-disk cache only when this file changes.

#: Pruning compares ``bound * SLACK`` with the k-th score: a safety margin far above
#: the relative rounding error of a float32 sum of a query's contributions.
SLACK = 1.0 + 1e-5

#: ``strategy="auto"``: a query runs term-at-a-time where the postings MaxScore would
#: walk in full (its essential lists, after its pre-pass), times this, exceed
#: term-at-a-time's work (the query's postings, plus the documents where it takes its
#: dense pass) ...
MAXSCORE_COST = 32

#: ... weighed up by ``1 + n_docs / TAAT_CACHE_DOCS`` (its scattered writes into the
#: accumulator miss the caches more as it grows). Both fitted by
#: ``benchmarks/tune_bm25_auto.py`` to per-query timings of both kernels on the scale
#: benchmark's corpora (600 queries at each of 20k, 100k, 200k, 1M documents) and
#: checked on 400 held-out ones (``benchmarks/results/bm25-auto.md``): against MaxScore
#: alone 1.19x at 20k, 1.04x at 100k, 0.96x at 200k, 1.00x at 1M documents.
TAAT_CACHE_DOCS = 1 << 15

#: MaxScore's threshold pre-pass accumulates at most ``n_docs / PREPASS_DIV`` postings,
#: and never more than ``PREPASS_CAP`` (profiled on the 1M-document benchmark corpus:
#: the uncapped n/8 pre-pass took 40% of a query; with the cap, MaxScore alone went from
#: 743 to 805-1,001 QPS there in ``benchmarks/bench_bm25_scale.py``, same at 200k).
PREPASS_DIV = 8
PREPASS_CAP = 8192

#: ``strategy="auto"`` runs every query term-at-a-time where ``k * MAXSCORE_MIN_SHARE``
#: exceeds the document count (top-100 of 5,000 documents: MaxScore's threshold stays
#: too low to prune).
MAXSCORE_MIN_SHARE = 64

njit = functools.partial(numba.njit, cache=True, nogil=True)


@functools.partial(numba.njit, cache=True, nogil=True, inline="always")
def better(s1, d1, s2, d2):
    return s1 > s2 or (s1 == s2 and d1 < d2)


@njit
def sift_down(hs, hp, i, n):
    # The root holds the worst entry; children are better than their parent.
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        w = left
        right = left + 1
        if right < n and better(hs[left], hp[left], hs[right], hp[right]):
            w = right
        if better(hs[i], hp[i], hs[w], hp[w]):
            hs[i], hs[w] = hs[w], hs[i]
            hp[i], hp[w] = hp[w], hp[i]
            i = w
        else:
            return


@functools.partial(numba.njit, cache=True, nogil=True, inline="always")
def push(hs, hp, size, k, s, d):
    if size < k:
        i = size
        hs[i] = s
        hp[i] = d
        while i > 0:
            parent = (i - 1) // 2
            if better(hs[parent], hp[parent], hs[i], hp[i]):
                hs[i], hs[parent] = hs[parent], hs[i]
                hp[i], hp[parent] = hp[parent], hp[i]
                i = parent
            else:
                break
        return size + 1
    if better(s, d, hs[0], hp[0]):
        hs[0] = s
        hp[0] = d
        sift_down(hs, hp, 0, size)
    return size


@njit
def emit(hs, hp, size, row_s, row_p):
    n = size
    while n > 0:
        row_s[n - 1] = hs[0]
        row_p[n - 1] = hp[0]
        n -= 1
        hs[0] = hs[n]
        hp[0] = hp[n]
        sift_down(hs, hp, 0, n)


@functools.partial(numba.njit, cache=True, nogil=True, inline="always")
def drain(acc, touched, nt, k, allowed, use_allowed, hs, hp, size):
    # The top-k of the first ``nt`` touched documents' sums into the heap, clearing acc.
    for i in range(nt):
        d = touched[i]
        s = acc[d]
        if s != 0:
            acc[d] = 0
            if size == k and s < hs[0]:
                continue  # the common case, tested here: a call costs more than the test
            if not use_allowed or allowed[d]:
                size = push(hs, hp, size, k, s, d)
    return size


@njit
def split_one(
    terms, indptr, indices, data, term_max, k, allowed, use_allowed, acc, mark, touched, hs, hp,
    col_of, dense,
):  # fmt: skip
    # The query's terms with a dense column are frequent ones (small contributions); a
    # document none of its other terms lists scores at most the sum of those terms'
    # bounds. Score only the documents the other terms list (their postings, plus one
    # lookup per frequent term, added in query order: the same sums bit for bit), and
    # keep that top-k where its k-th score beats that bound (with SLACK); else return
    # -1 (acc and marks cleared) and the caller scores every document. A term's bound
    # counts at least 0: with a negative idf (okapi, epsilon < 0) every contribution
    # of it is negative, and a document need not contain it, so summing the negative
    # maxima would under-estimate what an unscored document can reach.
    nt = 0
    bound = 0.0
    for j in range(len(terms)):
        t = terms[j]
        if col_of[t] >= 0:
            bound += max(np.float64(term_max[t]), 0.0)
            continue
        for p in range(indptr[t], indptr[t + 1]):
            d = indices[p]
            if not mark[d]:
                mark[d] = True
                touched[nt] = d
                nt += 1
    if nt < k:
        for i in range(nt):
            mark[touched[i]] = False
        return -1
    for j in range(len(terms)):
        t = terms[j]
        c = col_of[t]
        if c >= 0:
            col = dense[c]
            for i in range(nt):
                d = touched[i]
                acc[d] += col[d]
        else:
            for p in range(indptr[t], indptr[t + 1]):
                acc[indices[p]] += data[p]
    size = drain(acc, touched, nt, k, allowed, use_allowed, hs, hp, 0)  # clears acc
    for i in range(nt):
        mark[touched[i]] = False
    if size == k and np.float64(hs[0]) > bound + abs(bound) * (SLACK - 1.0):
        return size
    return -1


@njit
def taat_one(
    terms, indptr, indices, data, term_max, k, allowed, use_allowed, acc, mark, touched, hs, hp,
    col_of, dense,
):  # fmt: skip
    # A document whose sum is exactly 0 is dropped (as scipy's product drops it), so
    # acc != 0 is what "matched" means. ``col_of[t] >= 0``: term t also has a dense
    # column of contributions (0 where it is absent), ``dense[col_of[t]]``; ``mark``
    # (all False between calls) serves :func:`split_one`.
    n_docs = len(acc)
    total = 0
    has_dense = False
    has_sparse = False
    for j in range(len(terms)):
        t = terms[j]
        total += indptr[t + 1] - indptr[t]
        if col_of[t] >= 0:
            has_dense = True
        else:
            has_sparse = True
    if has_dense and has_sparse:
        size = split_one(
            terms, indptr, indices, data, term_max, k, allowed, use_allowed, acc, mark, touched,
            hs, hp, col_of, dense,
        )  # fmt: skip
        if size >= 0:
            return size
    size = 0
    if has_dense or total >= n_docs // 4:
        # Dense: accumulate, then scan every document (cheaper than tracking them).
        # A term with a dense column is added as one sequential vector pass instead of
        # scattered writes. Adding its zeros leaves every other sum unchanged, and the
        # terms are still added in query order, so every sum is bit for bit the same.
        for j in range(len(terms)):
            t = terms[j]
            c = col_of[t]
            if c >= 0:
                col = dense[c]
                if j == 0:  # acc is all zeros: 0 + x is x
                    acc[:] = col
                else:
                    for e in range(n_docs):
                        acc[e] += col[e]
            else:
                for p in range(indptr[t], indptr[t + 1]):
                    acc[indices[p]] += data[p]
        # Documents come in increasing order, so a tie with the heap's worst entry
        # never wins (it has the lower position): only a strictly larger score enters.
        # Once the heap is full that test is all a document costs (no branch on
        # s != 0, which the branch predictor cannot learn); acc is cleared after.
        # The heap's worst score is kept in a local, re-read only after an entry: the
        # loop is one compare per document (1.3x faster over a 20k-document scan).
        d = 0
        while size < k and d < n_docs:
            s = acc[d]
            if s != 0 and (not use_allowed or allowed[d]):
                size = push(hs, hp, size, k, s, d)
            d += 1
        if size == k:
            worst = hs[0]
            for e in range(d, n_docs):
                s = acc[e]
                if s > worst and s != 0 and (not use_allowed or allowed[e]):
                    size = push(hs, hp, size, k, s, e)
                    worst = hs[0]
        acc[:] = 0
        return size
    # Sparse: remember first touches (acc was 0); fewer postings than documents, so
    # the list never overflows. A document listed twice reads 0 the second time.
    nt = 0
    for j in range(len(terms)):
        t = terms[j]
        for p in range(indptr[t], indptr[t + 1]):
            d = indices[p]
            if acc[d] == 0:
                touched[nt] = d
                nt += 1
            acc[d] += data[p]
    return drain(acc, touched, nt, k, allowed, use_allowed, hs, hp, size)


@njit
def kth_partial(
    uniq, mult, order, m, indptr, indices, data, k, allowed, use_allowed, acc, touched, hs, hp
):
    # A lower bound on the k-th best score: accumulate the postings of the terms with
    # the largest bounds (rare terms: short lists) while they total at most a budget
    # (a share of the corpus, capped: past a few thousand postings the walk raises the
    # threshold as fast as more pre-pass would, and the pre-pass grew with the corpus),
    # and return the k-th largest of those partial sums (every contribution is >= 0,
    # so a partial sum never exceeds the full one), or -inf below k documents.
    n_docs = len(acc)
    budget = min(max(n_docs // PREPASS_DIV, 1024), n_docs, PREPASS_CAP)
    used = 0
    nt = 0
    for r in range(m - 1, -1, -1):
        u = order[r]
        t = uniq[u]
        length = indptr[t + 1] - indptr[t]
        if used + length > budget and used > 0:
            break
        if length > budget:
            break
        used += length
        w = np.float32(mult[u])
        for p in range(indptr[t], indptr[t + 1]):
            d = indices[p]
            if acc[d] == 0:
                touched[nt] = d
                nt += 1
            acc[d] += data[p] * w
    size = drain(acc, touched, nt, k, allowed, use_allowed, hs, hp, 0)
    if size < k:
        return -np.inf
    return np.float64(hs[0]) / SLACK


@njit
def maxscore_one(
    terms, indptr, indices, data, term_max, k, allowed, use_allowed, hs, hp, acc, touched, choose
):
    # Returns the heap size, or -1 where ``choose`` is set and the lists MaxScore would
    # still walk in full cost more than a term-at-a-time pass (the caller runs that).
    nt = len(terms)
    uniq = np.empty(nt, np.int64)
    mult = np.zeros(nt, np.int64)
    slot = np.empty(nt, np.int64)
    m = 0
    for j in range(nt):
        t = terms[j]
        f = -1
        for u in range(m):
            if uniq[u] == t:
                f = u
                break
        if f < 0:
            uniq[m] = t
            f = m
            m += 1
        mult[f] += 1
        slot[j] = f
    ub = np.empty(m, np.float64)
    for u in range(m):
        ub[u] = np.float64(term_max[uniq[u]]) * mult[u]
    order = np.argsort(ub)
    rank = np.empty(m, np.int64)
    pos = np.empty(m, np.int64)
    end = np.empty(m, np.int64)
    prefix = np.empty(m, np.float64)
    times = np.empty(m, np.float64)  # how often the query repeats the term
    total = 0.0
    for r in range(m):
        u = order[r]
        rank[u] = r
        times[r] = mult[u]
        t = uniq[u]
        pos[r] = indptr[t]
        end[r] = indptr[t + 1]
        total += ub[u]
        prefix[r] = total
    qrank = np.empty(nt, np.int64)
    for j in range(nt):
        qrank[j] = rank[slot[j]]
    val = np.zeros(m, np.float32)
    has = np.zeros(m, np.bool_)
    big = np.iinfo(np.int64).max
    theta = kth_partial(
        uniq, mult, order, m, indptr, indices, data, k, allowed, use_allowed, acc, touched, hs, hp
    )
    size = 0
    first = 0
    while first < m and prefix[first] * SLACK < theta:
        first += 1
    if choose:
        walked = 0
        total = 0
        for r in range(m):
            length = end[r] - pos[r]
            total += length
            if r >= first:
                walked += length
        n_docs = len(acc)
        taat = total + (n_docs if total >= n_docs // 4 else 0)  # + its dense pass
        # Term-at-a-time's random writes cost more once its accumulator outgrows the
        # caches; MaxScore's reads stay sequential.
        if walked * MAXSCORE_COST > taat * (1.0 + n_docs / TAAT_CACHE_DOCS):
            return -1
    while True:
        d = big
        for r in range(first, m):
            if pos[r] < end[r]:
                x = np.int64(indices[pos[r]])
                if x < d:
                    d = x
        if d == big:
            break
        partial = 0.0
        for r in range(first, m):
            has[r] = False
            p = pos[r]
            if p < end[r] and indices[p] == d:
                val[r] = data[p]
                has[r] = True
                partial += data[p] * times[r]
                pos[r] = p + 1
        if use_allowed and not allowed[d]:
            continue
        ok = True
        for r in range(first - 1, -1, -1):
            if (partial + prefix[r]) * SLACK < theta:
                ok = False
                break
            has[r] = False
            p = pos[r]
            e = end[r]
            if p < e and indices[p] < d:
                step = 1
                while p + step < e and indices[p + step] < d:
                    p += step
                    step *= 2
                lo = p + 1
                hi = min(p + step, e)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if indices[mid] < d:
                        lo = mid + 1
                    else:
                        hi = mid
                p = lo
            pos[r] = p
            if p < e and indices[p] == d:
                val[r] = data[p]
                has[r] = True
                partial += data[p] * times[r]
        if not ok:
            continue
        s = np.float32(0.0)
        for j in range(nt):
            r = qrank[j]
            if has[r]:
                s += val[r]
        if s == 0 or (size == k and s < hs[0]):
            continue
        size = push(hs, hp, size, k, s, d)
        if size == k and hs[0] > theta:
            theta = np.float64(hs[0])
            while first < m and prefix[first] * SLACK < theta:
                first += 1
    return size


@njit
def search(
    q_indptr,
    q_terms,
    indptr,
    indices,
    data,
    term_max,
    term_min,
    k,
    allowed,
    use_allowed,
    strategy,
    acc,
    mark,
    touched,
    out_s,
    out_p,
    col_of,
    dense,
):
    # strategy: 0 auto (per query: MaxScore where every contribution is >= 0 and its
    # estimated cost is below term-at-a-time's, else term-at-a-time), 1 MaxScore where
    # every contribution is >= 0, 2 always term-at-a-time.
    hs = np.empty(k, np.float32)
    hp = np.empty(k, np.int64)
    for q in range(len(q_indptr) - 1):
        terms = q_terms[q_indptr[q] : q_indptr[q + 1]]
        if len(terms) == 0:
            continue
        # auto: where k is a sizeable share of the corpus, the k-th score stays low
        # and MaxScore prunes little; term-at-a-time without its pre-pass is cheaper.
        use_max = strategy == 1 or (strategy == 0 and k * MAXSCORE_MIN_SHARE <= len(acc))
        if use_max:
            for j in range(len(terms)):
                if term_min[terms[j]] < 0 or (strategy == 0 and col_of[terms[j]] >= 0):
                    # auto: a frequent term's dense column makes term-at-a-time's
                    # split (split_one) the cheaper pruning
                    use_max = False
                    break
        size = -1
        if use_max:
            size = maxscore_one(
                terms,
                indptr,
                indices,
                data,
                term_max,
                k,
                allowed,
                use_allowed,
                hs,
                hp,
                acc,
                touched,
                strategy == 0,
            )
        if size < 0:
            size = taat_one(
                terms, indptr, indices, data, term_max, k, allowed, use_allowed, acc, mark,
                touched, hs, hp, col_of, dense,
            )  # fmt: skip
        emit(hs, hp, size, out_s[q], out_p[q])
