"""Proxy losses: Proxy-Anchor (Kim et al. 2020) and ProxyNCA (Movshovitz-Attias et al. 2017).

Both compare each embedding with one proxy per class (``proxies`` [C, D], trained with the
network), through the cosines S [B, C] of L2-normalised rows (``ops.class_cosines``).

- Proxy-Anchor [margin 0.1, alpha 32]: with P(c) the samples of class c, N(c) the others,
  C+ the classes with a sample in the batch,
      L = 1/|C+| sum_c log(1 + sum_{i in P(c)} exp(-alpha (S[i, c] - margin)))
        + 1/C    sum_c log(1 + sum_{i in N(c)} exp( alpha (S[i, c] + margin))).
  L is one number for the batch, not a sum over samples: the kernel returns L for every
  sample, so that the mean is L (PML 2.9's ``DivisorReducer``) and its gradient L's.
- ProxyNCA [softmax_scale 1]: on unit vectors the squared distance is 2 - 2 S, and
      l(i) = -log softmax_c(-softmax_scale ||x_i - p_c||^2)[y_i]
           = -log softmax_c(2 softmax_scale S[i, c])[y_i],
  averaged over samples (PML's ``MeanReducer``; PML leaves out samples whose probability
  underflows to 0, which happens only for softmax_scale > ~20). ProxyNCA++ (Teh et al.
  2020) is this loss with a low temperature: softmax_scale = 1 / T, the paper's T = 1/9.

A label outside 0 .. C - 1 is an error (``class_cosines.class_batch``).

Cross-replica: proxies are replicated variables whose gradients the strategy sums. ProxyNCA
is a mean over samples, so the replicas' losses add up to the global one; Proxy-Anchor's L
is not separable: each replica computes L on its own batch (the replicas' mean of L).

References: Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020;
Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies", ICCV 2017;
Teh et al., "ProxyNCA++", ECCV 2020.
"""

import tensorflow as tf

from rankloss_tf.ops.checks import check_non_negative, check_positive, nan_unless_finite
from rankloss_tf.ops.class_cosines import class_batch, class_cosines, float32_embeddings
from rankloss_tf.ops.cosine_rows import masked_logsumexp


def _finish(losses, valid, cosines, dtype):
    """NaN for labels out of range and non-finite cosines, in ``dtype``."""
    losses = tf.where(valid, losses, tf.constant(float("nan"), losses.dtype))
    return tf.cast(nan_unless_finite(losses, cosines), dtype)


def proxy_anchor_from_cosines(labels, cosines, margin=0.1, alpha=32.0):
    """Proxy-Anchor loss from the cosines [B, C] of the embeddings and the proxies: L for every sample.

    Example:
    >>> loss = proxy_anchor_from_cosines([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    >>> [round(float(v), 4) for v in loss]
    [3.24, 3.24]
    """
    margin, alpha = check_non_negative("margin", margin), check_positive("alpha", alpha)
    labels, cosines, valid, dtype = class_batch(labels, cosines)
    members = tf.cast(tf.one_hot(labels, tf.shape(cosines)[1]), tf.bool)
    pull = masked_logsumexp(-alpha * (cosines - margin), members, axis=0, add_one=True)
    push = masked_logsumexp(alpha * (cosines + margin), tf.logical_not(members), axis=0, add_one=True)
    present = tf.reduce_sum(tf.cast(tf.reduce_any(members, axis=0), cosines.dtype))
    total = tf.math.divide_no_nan(tf.reduce_sum(pull), present) + tf.reduce_mean(push)
    return _finish(tf.fill(tf.shape(labels), total), valid, cosines, dtype)


def proxy_anchor_loss(labels, embeddings, proxies, margin=0.1, alpha=32.0):
    """Per-sample Proxy-Anchor losses (module docstring): L for every sample.

    Args:
        labels: class ids 0 .. C - 1, [B] or [B, 1].
        embeddings: float [B, D].
        proxies: float [C, D], one proxy per class.
        margin: >= 0 (default 0.1).
        alpha: > 0 (default 32).

    Returns:
        Float [B] whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> loss = proxy_anchor_loss([0, 1], [[1.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(tf.reduce_mean(loss)), 4)
    3.24
    """
    embeddings = tf.convert_to_tensor(embeddings)
    cosines = class_cosines(float32_embeddings(embeddings), proxies)
    return tf.cast(proxy_anchor_from_cosines(labels, cosines, margin, alpha), embeddings.dtype)


def proxy_nca_from_cosines(labels, cosines, softmax_scale=1.0):
    """ProxyNCA losses [B] from the cosines [B, C] of the embeddings and the proxies.

    Example:
    >>> [round(float(v), 4) for v in proxy_nca_from_cosines([0], [[1.0, 0.0]])]
    [0.1269]
    """
    softmax_scale = check_positive("softmax_scale", softmax_scale)
    labels, cosines, valid, dtype = class_batch(labels, cosines)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, 2.0 * softmax_scale * cosines)
    return _finish(losses, valid, cosines, dtype)


def proxy_nca_loss(labels, embeddings, proxies, softmax_scale=1.0):
    """Per-sample ProxyNCA losses (module docstring).

    Args:
        labels: class ids 0 .. C - 1, [B] or [B, 1].
        embeddings: float [B, D].
        proxies: float [C, D].
        softmax_scale: > 0 (default 1; ProxyNCA++: 9).

    Returns:
        Float [B] whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> round(float(tf.reduce_mean(proxy_nca_loss([0], [[2.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]))), 4)
    0.1269
    """
    embeddings = tf.convert_to_tensor(embeddings)
    cosines = class_cosines(float32_embeddings(embeddings), proxies)
    return tf.cast(proxy_nca_from_cosines(labels, cosines, softmax_scale), embeddings.dtype)

