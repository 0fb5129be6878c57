"""Margin softmax losses: ArcFace (Deng et al. 2019, with sub-centres) and CosFace (Wang et al. 2018).

A softmax cross-entropy over C classes whose logits are scale * cos(theta_c), theta_c the
angle between the L2-normalised embedding and class c's weight vector (``weights`` [C, D],
or [C, K, D] for K sub-centres: the closest one, Deng et al. 2020), with a margin on the
target class y only:

- ArcFace [margin 28.6 degrees, scale 64]: cos(theta_y + m); where theta_y > 180 - m the
  logit is cos(theta_y) - m sin(m) instead (PML 2.9's rule, which keeps it decreasing).
- CosFace [margin 0.35, scale 64]: cos(theta_y) - m.

l(i) = -log softmax(logits_i)[y_i]; the loss is the mean over samples (PML 2.9's
``MeanReducer``). cos(theta + m) is written cos m cos theta - sin m sin theta (no acos:
sin theta at least 1e-6: finite gradients at cos theta = +-1). A label outside 0 .. C - 1 is an error
(``class_cosines.class_batch``). Cross-replica: a mean over samples, so per-replica
losses add up to the global one; the weights are replicated variables.

References: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
Recognition", CVPR 2019; Deng et al., "Sub-center ArcFace", ECCV 2020; Wang et al.,
"CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018.
"""

import math

import tensorflow as tf

from rankloss_tf.ops.checks import check_non_negative, check_positive, nan_unless_finite
from rankloss_tf.ops.class_cosines import class_batch, class_cosines, float32_embeddings

MARGIN_TYPES = ("arcface", "cosface")


def check_margin(margin_type, margin):
    """``(margin_type, margin)`` checked: "arcface" (degrees in [0, 180)) or "cosface" (>= 0).

    Example:
    >>> check_margin("arcface", 28.6)
    ('arcface', 28.6)
    """
    if margin_type not in MARGIN_TYPES:
        raise ValueError(f"`margin_type` must be one of {MARGIN_TYPES}. Received: margin_type={margin_type!r}")
    margin = check_non_negative("margin", margin)
    if margin_type == "arcface" and margin >= 180.0:
        raise ValueError(f"`margin` (degrees) must be in [0, 180). Received: margin={margin!r}")
    return margin_type, margin


def margin_softmax_from_cosines(labels, cosines, margin_type, margin, scale):
    """Per-sample margin softmax losses [B] from the class cosines [B, C].

    Args:
        labels: class ids 0 .. C - 1, [B] or [B, 1].
        cosines: float [B, C] (``class_cosines``).
        margin_type: "arcface" (``margin`` in degrees) or "cosface".
        margin: >= 0.
        scale: > 0.

    Returns:
        Float [B], dtype of ``cosines``.

    Example:
    >>> [round(float(v), 4) for v in margin_softmax_from_cosines([0], [[1.0, 0.0]], "cosface", 0.35, 64)]
    [0.0]
    """
    (margin_type, margin), scale = check_margin(margin_type, margin), check_positive("scale", scale)
    labels, cosines, valid, dtype = class_batch(labels, cosines)
    target = tf.gather(cosines, labels[:, None], batch_dims=1)[:, 0]
    if margin_type == "cosface":
        modified = target - margin
    else:
        radians = math.radians(margin)
        # sin(theta) >= 1e-6: a finite gradient where cos(theta) = +-1 (value change < 1e-6 sin m).
        sine = tf.sqrt(tf.clip_by_value(1.0 - tf.square(target), 1e-12, 1.0))
        modified = tf.where(target >= -math.cos(radians), math.cos(radians) * target - math.sin(radians) * sine,
                            target - radians * math.sin(radians))
    logits = scale * (cosines + tf.one_hot(labels, tf.shape(cosines)[1], dtype=cosines.dtype) * (modified - target)[:, None])
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    losses = tf.where(valid, losses, tf.constant(float("nan"), losses.dtype))
    return tf.cast(nan_unless_finite(losses, cosines), dtype)


def arcface_loss(labels, embeddings, weights, margin=28.6, scale=64.0):
    """Per-sample ArcFace losses (module docstring); sub-centre ArcFace for ``weights`` [C, K, D].

    Args:
        labels: class ids 0 .. C - 1, [B] or [B, 1].
        embeddings: float [B, D].
        weights: float [C, D], or [C, K, D] with K sub-centres per class.
        margin: additive angular margin in degrees, 0 <= margin < 180 (default 28.6, 0.5 rad).
        scale: > 0 (default 64).

    Returns:
        Float [B] whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> round(float(arcface_loss([0], [[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])[0]), 4)
    0.0
    """
    embeddings = tf.convert_to_tensor(embeddings)
    cosines = class_cosines(float32_embeddings(embeddings), weights)
    return tf.cast(margin_softmax_from_cosines(labels, cosines, "arcface", margin, scale), embeddings.dtype)


def cosface_loss(labels, embeddings, weights, margin=0.35, scale=64.0):
    """Per-sample CosFace losses (module docstring).

    Args:
        labels: class ids 0 .. C - 1, [B] or [B, 1].
        embeddings: float [B, D].
        weights: float [C, D] (or [C, K, D] with sub-centres).
        margin: additive cosine margin >= 0 (default 0.35).
        scale: > 0 (default 64).

    Returns:
        Float [B] whose mean is the loss, dtype of ``embeddings``.

    Example:
    >>> round(float(cosface_loss([0], [[0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])[0]), 4)
    86.4
    """
    embeddings = tf.convert_to_tensor(embeddings)
    cosines = class_cosines(float32_embeddings(embeddings), weights)
    return tf.cast(margin_softmax_from_cosines(labels, cosines, "cosface", margin, scale), embeddings.dtype)
