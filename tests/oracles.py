"""Brute-force NumPy loop oracles for every loss, written from the formulas in DESIGN.md.

Deliberately slow and literal: one Python loop per pair / triplet, float64 throughout.
"""

import math

import numpy as np


def distance_matrix(embeddings, distance):
    x = np.asarray(embeddings, np.float64)
    n = len(x)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if distance == "cosine":
                cos = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
                d[i, j] = max(1.0 - cos, 0.0)
            elif i != j:
                sq = float(np.sum((x[i] - x[j]) ** 2))
                d[i, j] = sq if distance == "squared_l2" else math.sqrt(sq)
    return d


def _pairs(labels):
    n = len(labels)
    return [(a, p) for a in range(n) for p in range(n) if a != p and labels[a] == labels[p]]


def triplet_semihard(labels, embeddings, margin=1.0, distance="l2"):
    d = distance_matrix(embeddings, distance)
    total, count = 0.0, 0
    for a, p in _pairs(labels):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not negatives:
            negative = d[a].min()
        else:
            beyond = [d[a, n] for n in negatives if d[a, n] > d[a, p]]
            negative = min(beyond) if beyond else max(d[a, n] for n in negatives)
        total += max(d[a, p] - negative + margin, 0.0)
        count += 1
    return total / count if count else 0.0


def triplet_hard(labels, embeddings, margin=1.0, soft=False, distance="l2", skip_without_positive=True):
    d = distance_matrix(embeddings, distance)
    n = len(labels)
    losses = []
    for a in range(n):
        positives = [d[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [d[a, q] for q in range(n) if labels[q] != labels[a]]
        if not positives and skip_without_positive:
            losses.append(0.0)
            continue
        dp = max(positives) if positives else d[a].min()
        dn = min(negatives) if negatives else d[a].max()
        losses.append(math.log1p(math.exp(dp - dn)) if soft else max(dp - dn + margin, 0.0))
    return float(np.mean(losses))


def contrastive(labels, embeddings, margin=1.0, distance="l2"):
    d = distance_matrix(embeddings, distance)
    n = len(labels)
    per_anchor = []
    for a in range(n):
        terms = []
        for b in range(n):
            if a == b:
                continue
            if labels[a] == labels[b]:
                terms.append(d[a, b] ** 2)
            else:
                terms.append(max(margin - d[a, b], 0.0) ** 2)
        per_anchor.append(np.mean(terms) if terms else 0.0)
    return float(np.mean(per_anchor))


def npair_tuples(labels):
    """[(anchor, positive)]: per class, samples 2k and 2k+1 in batch order."""
    seen = {}
    for i, label in enumerate(labels):
        seen.setdefault(label, []).append(i)
    tuples = []
    for members in seen.values():
        for k in range(0, len(members) - 1, 2):
            tuples.append((members[k], members[k + 1]))
    return sorted(tuples)


def npair(labels, embeddings, variant="mc", l2_reg=0.002):
    x = np.asarray(embeddings, np.float64)
    tuples = npair_tuples(labels)
    if not tuples:
        return 0.0
    losses = []
    for a, p in tuples:
        terms = [x[a] @ x[q] - x[a] @ x[p] for (b, q) in tuples if labels[b] != labels[a]]
        if variant == "mc":
            losses.append(math.log(1.0 + sum(math.exp(t) for t in terms)))
        else:
            losses.append(sum(math.log1p(math.exp(t)) for t in terms))
    reg = np.mean([x[a] @ x[a] for a, _ in tuples]) + np.mean([x[p] @ x[p] for _, p in tuples])
    return float(np.mean(losses) + 0.25 * l2_reg * reg)


def _unit(embeddings):
    x = np.asarray(embeddings, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _angular_term(x, a, p, n, t):
    return 4 * t * (x[a] + x[p]) @ x[n] - 2 * (1 + t) * x[a] @ x[p]


def angular(labels, embeddings, alpha=45.0):
    x = _unit(embeddings)
    t = math.tan(math.radians(alpha)) ** 2
    losses = []
    for a, p in _pairs(labels):
        terms = [_angular_term(x, a, p, n, t) for n in range(len(labels)) if labels[n] != labels[a]]
        losses.append(_log1p_sum_exp(terms))
    return float(np.mean(losses)) if losses else 0.0


def _log1p_sum_exp(terms):
    """log(1 + sum exp(terms)) without overflow (large alpha gives terms in the thousands)."""
    peak = max([0.0, *terms])
    return peak + math.log(math.exp(-peak) + sum(math.exp(f - peak) for f in terms))


def npair_angular(labels, embeddings, alpha=45.0, lam=2.0):
    raw = np.asarray(embeddings, np.float64)
    x = _unit(embeddings)
    t = math.tan(math.radians(alpha)) ** 2
    tuples = npair_tuples(labels)
    if not tuples:
        return 0.0
    losses = []
    for a, p in tuples:
        negatives = [q for (b, q) in tuples if labels[b] != labels[a]]
        npair_term = math.log1p(sum(math.exp(raw[a] @ raw[q] - raw[a] @ raw[p]) for q in negatives))
        angular_term = math.log1p(sum(math.exp(_angular_term(x, a, p, q, t)) for q in negatives))
        losses.append(npair_term + lam * angular_term)
    return float(np.mean(losses))


def assert_same_neighbours(got, want, scores, atol, err_msg=""):
    """Neighbour lists that agree up to swaps at near-ties: two code paths (XLA or not, another
    batch size, another CPU's oneDNN kernels) may order two items whose scores differ by rounding.

    Args:
        got, want: int [Q, k] neighbour indices, best first.
        scores: float [Q, N], each item's score for each query (a distance or a similarity),
            computed once, in float64 where possible.
        atol: how far two scores may be apart and still count as a tie.

    At every rank the two items' scores agree within ``atol``: a swap of near-tied items
    passes, a wrong neighbour does not (its score differs), nor a repeated one.
    """
    got, want, scores = np.asarray(got), np.asarray(want), np.asarray(scores, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    rows = np.arange(len(got))[:, None]
    np.testing.assert_allclose(scores[rows, got], scores[rows, want], rtol=0, atol=atol, err_msg=err_msg)
    assert all(len(set(row)) == len(row) for row in got.tolist()), f"a neighbour repeated {err_msg}"
