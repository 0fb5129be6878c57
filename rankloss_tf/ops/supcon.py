"""The supervised contrastive family: SupCon (Khosla et al. 2020) and NT-Xent (Chen et al. 2020).

On L2-normalised embeddings, logits z[a, j] = S[a, j] / temperature (S = cosine
similarities), P(a) the positives of anchor a, N(a) its negatives:

- SupCon: l(a) = -1/|P(a)| sum_{p in P(a)} (z[a, p] - log sum_{j in P(a) + N(a)} exp z[a, j]).
  The loss is the mean of l(a) over the anchors whose l(a) is not 0 (PyTorch Metric
  Learning 2.9's ``AvgNonZeroReducer``): the anchors with a positive and at least one
  other column (a positive or a negative). We divide by that count, taken from the labels.
- NT-Xent (SimCLR's loss, every positive pair of a labelled batch):
  l(a, p) = -log(exp z[a, p] / (exp z[a, p] + sum_{n in N(a)} exp z[a, n])).
  The loss is the mean over ordered positive pairs (PML's ``MeanReducer`` on pairs); the
  kernel returns each anchor's sum over its pairs times B / (number of pairs). PML adds
  1e-38 inside the log: the same except where the ratio underflows float32 (loss > 87).

Both give 0 for a batch without a positive or without a negative pair (as PML), with
zero gradients. Memory O(block x B) (``ops.cosine_rows``); with ``memory`` (Cross-Batch
Memory), positives and negatives come from the batch and the memory.

References: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020; Chen et al.,
"A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.
"""

import tensorflow as tf

from rankloss_tf.ops.checks import check_positive
from rankloss_tf.ops.cosine_rows import cosine_batch, masked_logsumexp, reference_counts, row_values

_TEMPORARIES = 8


def _scaled(values, counts, batch, weights):
    """``values`` * B / sum(weights) on the anchor range; 0 without a positive or a negative pair."""
    num_anchors = tf.shape(batch.labels)[0]
    total = tf.reduce_sum(weights)
    has_pairs = tf.logical_and(tf.reduce_sum(counts.positives) > 0, tf.reduce_sum(counts.negatives) > 0)
    scale = tf.where(has_pairs, tf.math.divide_no_nan(tf.cast(num_anchors, values.dtype), tf.cast(total, values.dtype)),
                     tf.zeros([], values.dtype))
    return tf.cast(values * scale, batch.dtype)


def supcon_loss(labels, embeddings, temperature=0.1, anchors=None, memory=None, memory_budget=None):
    """Per-anchor supervised contrastive losses (module docstring for the formula).

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (normalised inside).
        temperature: > 0 (default 0.1).
        anchors: optional ``(start, size)``: only those anchors' losses.
        memory: optional ``(labels [M], embeddings [M, D], valid [M])`` of past samples.
        memory_budget: bytes for the blocked [rows, R] intermediates.

    Returns:
        Per-anchor losses [B] (or [size]) whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> loss = supcon_loss([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> round(float(tf.reduce_mean(loss)), 4)
    0.0638
    """
    temperature = check_positive("temperature", temperature)
    batch = cosine_batch(labels, embeddings, anchors, memory)

    def rows(cosines, positives, negatives):
        logits = cosines / temperature
        log_total = masked_logsumexp(logits, tf.logical_or(positives, negatives))
        log_probabilities = tf.where(positives, logits - log_total[:, None], tf.zeros([], logits.dtype))
        count = tf.reduce_sum(tf.cast(positives, logits.dtype), axis=1)
        return -tf.math.divide_no_nan(tf.reduce_sum(log_probabilities, axis=1), count)

    counts = reference_counts(batch)
    nonzero = tf.logical_and(counts.positives > 0, counts.positives + counts.negatives > 1)
    values = row_values(batch, rows, _TEMPORARIES, memory_budget)
    return _scaled(values, counts, batch, tf.cast(nonzero, tf.int32))


def ntxent_loss(labels, embeddings, temperature=0.07, anchors=None, memory=None, memory_budget=None):
    """Per-anchor NT-Xent losses over every positive pair (module docstring for the formula).

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (normalised inside).
        temperature: > 0 (default 0.07).
        anchors, memory, memory_budget: as in ``supcon_loss``.

    Returns:
        Per-anchor losses [B] (or [size]) whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> loss = ntxent_loss([0, 0, 1, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> round(float(tf.reduce_mean(loss)), 4)
    0.0279
    """
    temperature = check_positive("temperature", temperature)
    batch = cosine_batch(labels, embeddings, anchors, memory)

    def rows(cosines, positives, negatives):
        logits = cosines / temperature
        log_negatives = masked_logsumexp(logits, negatives)
        has_negative = tf.reduce_any(negatives, axis=1, keepdims=True)
        pairs = tf.math.softplus(log_negatives[:, None] - logits)
        return tf.reduce_sum(tf.where(tf.logical_and(positives, has_negative), pairs, tf.zeros([], pairs.dtype)), axis=1)

    counts = reference_counts(batch)
    values = row_values(batch, rows, _TEMPORARIES, memory_budget)
    return _scaled(values, counts, batch, counts.positives)
