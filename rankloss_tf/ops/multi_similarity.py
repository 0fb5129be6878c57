"""Multi-Similarity loss (Wang et al. 2019), with its pair miner as an option.

On L2-normalised embeddings, S = cosine similarities; for each anchor a with positives
P(a) and negatives N(a):

    l(a) = 1/alpha log(1 + sum_{p in P(a)} exp(-alpha (S[a, p] - base)))
         + 1/beta  log(1 + sum_{n in N(a)} exp( beta (S[a, n] - base))).

With ``epsilon`` (the paper's pair mining, PyTorch Metric Learning's
``MultiSimilarityMiner``), a positive counts only if S[a, p] - epsilon < max_n S[a, n]
and a negative only if S[a, n] + epsilon > min_p S[a, p].

The loss is the mean of l(a) over every anchor of the batch (PML 2.9's ``MeanReducer``
over all rows, anchors without pairs giving 0). PML returns 0 for a batch in which the
miner keeps at most one positive and one negative pair; we compute those pairs' loss.
Memory O(block x B) (``ops.cosine_rows``).

Reference: Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep
Metric Learning", CVPR 2019.
"""

import tensorflow as tf

from rankloss_tf.ops.checks import check_finite, check_non_negative, check_positive
from rankloss_tf.ops.cosine_rows import cosine_batch, masked_logsumexp, row_values

_TEMPORARIES = 10


def mined_pairs(cosines, positives, negatives, epsilon):
    """The positives and negatives [r, R] that the Multi-Similarity miner keeps.

    Example:
    >>> s = tf.constant([[1.0, 0.9, 0.2, 0.95]])
    >>> p, n = mined_pairs(s, tf.constant([[False, True, False, False]]), tf.constant([[False, False, True, True]]), 0.1)
    >>> p.numpy().tolist(), n.numpy().tolist()
    ([[False, True, False, False]], [[False, False, False, True]])
    """
    hardest_negative = tf.reduce_max(tf.where(negatives, cosines, -float("inf")), axis=1, keepdims=True)
    hardest_positive = tf.reduce_min(tf.where(positives, cosines, float("inf")), axis=1, keepdims=True)
    return (tf.logical_and(positives, cosines - epsilon < hardest_negative),
            tf.logical_and(negatives, cosines + epsilon > hardest_positive))


def multi_similarity_loss(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, epsilon=None, anchors=None,
                          memory=None, memory_budget=None):
    """Per-anchor Multi-Similarity losses (module docstring for the formula).

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (normalised inside).
        alpha: weight of the positive pairs, > 0 (default 2).
        beta: weight of the negative pairs, > 0 (default 50).
        base: the similarity both terms are measured from (default 0.5).
        epsilon: None (every pair) or the miner's margin >= 0 (the paper: 0.1).
        anchors: optional ``(start, size)``: only those anchors' losses.
        memory: optional ``(labels [M], embeddings [M, D], valid [M])`` of past samples
            (Cross-Batch Memory): more reference columns for every anchor.
        memory_budget: bytes for the blocked [rows, R] intermediates.

    Returns:
        Per-anchor losses [B] (or [size]) whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> loss = multi_similarity_loss([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> round(float(tf.reduce_mean(loss)), 4)
    0.2688
    """
    alpha, beta = check_positive("alpha", alpha), check_positive("beta", beta)
    base = check_finite("base", base)
    epsilon = None if epsilon is None else check_non_negative("epsilon", epsilon)
    batch = cosine_batch(labels, embeddings, anchors, memory)

    def rows(cosines, positives, negatives):
        if epsilon is not None:
            positives, negatives = mined_pairs(cosines, positives, negatives, epsilon)
        pull = masked_logsumexp(-alpha * (cosines - base), positives, add_one=True) / alpha
        push = masked_logsumexp(beta * (cosines - base), negatives, add_one=True) / beta
        return pull + push

    return tf.cast(row_values(batch, rows, _TEMPORARIES, memory_budget), batch.dtype)
