"""Validation of loss options and label / embedding batches, shared by kernels and classes.

Every check returns the value in its canonical form or raises
``ValueError("... Received: ...")`` naming what it received. Python and NumPy scalars
are accepted alike (``0.2``, ``np.float32(0.2)``, ``np.int64(2)``); booleans are not numbers
here.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

_HALF_DTYPES = (tf.float16, tf.bfloat16)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_non_negative(name, value):
    """Returns ``value`` as a Python float if it is a finite number >= 0.

    Args:
        name: the argument's name, for the error message.
        value: a Python or NumPy real number.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: a non-number, a boolean, NaN, an infinity or a negative number.

    Example:
    >>> check_non_negative("margin", np.float32(0.5))
    0.5
    """
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return float(value)


def check_alpha(alpha):
    """Returns the angle ``alpha`` (degrees) as a float if 0 < alpha < 90.

    Example:
    >>> check_alpha(np.int64(45))
    45.0
    """
    if not _is_number(alpha) or not 0.0 < alpha < 90.0:
        raise ValueError(f"`alpha` must be an angle in degrees with 0 < alpha < 90. Received: alpha={alpha!r}")
    return float(alpha)


def check_choice(name, value, choices):
    """Returns ``value`` if it is one of ``choices``.

    Example:
    >>> check_choice("variant", "mc", ("mc", "ovo"))
    'mc'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def _check_labels(labels):
    """Labels as a comparable, sortable tensor [B]: integers exactly, unsigned ones bit-exact.

    uint64 ids are reinterpreted as int64 (a bijection, so ids >= 2**63 stay distinct);
    the other unsigned types are widened to int64.
    """
    if labels.dtype == tf.string or not (labels.dtype.is_integer or labels.dtype.is_floating):
        raise ValueError(
            "`labels` must be integer (or float) class ids; map other labels to integers first. "
            f"Received: labels.dtype={labels.dtype.name}"
        )
    if labels.dtype == tf.uint64:
        return tf.bitcast(labels, tf.int64)
    if labels.dtype.is_unsigned:
        return tf.cast(labels, tf.int64)
    return labels


def standardize_inputs(labels, embeddings):
    """Checks and reshapes a (labels, embeddings) batch for a loss kernel.

    Labels are compared exactly in their own dtype (never cast through float32), so
    int32 class ids such as 2**24 and 2**24 + 1 stay distinct.

    Args:
        labels: integer (or float) class labels, shape [B] or [B, 1].
        embeddings: float tensor [B, D].

    Returns:
        ``(labels [B], embeddings [B, D] in float32, or float64 for float64 input)``.

    Raises:
        ValueError: wrong ranks, non-numeric labels, a non-float ``embeddings``, or
            mismatched batch sizes.

    Example:
    >>> labels, embeddings = standardize_inputs([[0], [1]], [[1.0], [2.0]])
    >>> labels.shape.as_list(), embeddings.dtype.name
    ([2], 'float32')
    """
    embeddings = tf.convert_to_tensor(embeddings)
    labels = _check_labels(tf.convert_to_tensor(labels))
    if not embeddings.dtype.is_floating:
        raise ValueError(
            f"`embeddings` must be a float tensor. Received: embeddings.dtype={embeddings.dtype.name}"
        )
    if embeddings.shape.rank is not None and embeddings.shape.rank != 2:
        raise ValueError(
            f"`embeddings` must have shape [batch_size, dim]. Received: embeddings.shape={embeddings.shape}"
        )
    if labels.shape.rank is not None:
        if labels.shape.rank == 2 and labels.shape[1] == 1:
            labels = tf.reshape(labels, [-1])
        elif labels.shape.rank != 1:
            raise ValueError(
                f"`labels` must have shape [batch_size] or [batch_size, 1]. Received: labels.shape={labels.shape}"
            )
    else:
        labels = tf.reshape(labels, [-1])
    n_labels, n_embeddings = labels.shape[0], embeddings.shape[0]
    if n_labels is not None and n_embeddings is not None and n_labels != n_embeddings:
        raise ValueError(
            "`labels` and `embeddings` must have the same batch size. "
            f"Received: labels.shape={labels.shape}, embeddings.shape={embeddings.shape}"
        )
    if embeddings.dtype in _HALF_DTYPES:
        embeddings = tf.cast(embeddings, tf.float32)
    return labels, embeddings


def nan_unless_finite(losses, embeddings):
    """``losses``, made NaN everywhere if any entry of ``embeddings`` is NaN or infinite.

    NaN in, NaN out: masking and min / max selections would otherwise hide a
    non-finite embedding row in a finite loss while its gradients are NaN.

    Args:
        losses: float tensor of any shape.
        embeddings: float tensor the losses were computed from.

    Returns:
        ``losses`` unchanged (values and gradients) when every embedding is finite.

    Example:
    >>> float(nan_unless_finite(tf.constant(1.0), tf.constant([[float("nan")]])))
    nan
    """
    finite = tf.reduce_all(tf.math.is_finite(embeddings))
    return losses + tf.where(finite, tf.zeros([], losses.dtype), tf.constant(float("nan"), losses.dtype))


# --- Options of the losses with class heads, memories and temperatures ---


def check_count(name, value):
    """Returns ``value`` as a Python int if it is an integer >= 1 (NumPy integers too).

    Example:
    >>> check_count("memory_size", np.int64(8))
    8
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def check_positive(name, value):
    """Returns ``value`` as a Python float if it is a finite number > 0.

    Example:
    >>> check_positive("temperature", 0.1)
    0.1
    """
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def check_finite(name, value):
    """Returns ``value`` as a Python float if it is a finite number.

    Example:
    >>> check_finite("base", -0.5)
    -0.5
    """
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)
