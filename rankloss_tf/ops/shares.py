"""How a batch's work splits into equal shares (cross-replica losses).

Under ``tf.distribute`` with ``cross_replica=True`` every replica holds the gathered
global batch of G samples. A kernel called with ``share=(index, count)`` computes only
share ``index`` of ``count`` and returns [G] per-anchor losses; the replicas sum their
vectors with one all-reduce, whose gradient hands each replica the global upstream, so
each share's backward pass is complete. The shares sum to the whole batch's losses and
gradients, and each does 1 / count of one device's work, wherever a class's rows are.

Three splits, one per kind of loss:
- items (N-pair tuples): ``share_slots``, an equal run of the items;
- unordered pairs (contrastive): ``pair_tiles``, each pair in exactly one share;
- anchors with their classes (angular): ``sorted_rows``, a run of the batch sorted by
  label, so that a share holds whole classes.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf


def check_share(share, anchors=None):
    """``(index, count)`` of a share (index an int or int32 tensor), or None.

    Args:
        share: None or a pair ``(index, count)``: an integer ``count >= 1`` and an
            index in [0, count) (an integer or a scalar integer tensor, e.g. the replica id;
            a tensor index is trusted to be in range).
        anchors: the kernel's ``anchors`` argument, which a share cannot be combined with.

    Returns:
        ``(index, count)`` or None.

    Example:
    >>> check_share((1, 4))
    (1, 4)
    """
    if share is None:
        return None
    if anchors is not None:
        raise ValueError(f"`share` and `anchors` cannot be combined. Received: share={share!r}, anchors={anchors!r}")
    if not isinstance(share, (tuple, list)) or len(share) != 2:
        raise ValueError(f"`share` must be a pair (index, count). Received: share={share!r}")
    index, count = share
    if not _is_integer(count) or count < 1:
        raise ValueError(f"`share` count must be an integer >= 1. Received: share={share!r}")
    if _is_integer(index):
        if not 0 <= index < count:
            raise ValueError(f"`share` index must be in [0, count). Received: share={share!r}")
        return int(index), int(count)
    if not (tf.is_tensor(index) and index.dtype.is_integer and index.shape.rank == 0):
        raise ValueError(f"`share` index must be an integer or a scalar integer tensor. Received: share={share!r}")
    return tf.cast(index, tf.int32), int(count)


def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def share_slots(num_items, index, count):
    """Items of share ``index`` of ``count``: ``(slots [n], in_range [n], n)``, n = ceil(N / count).

    Share k holds items k n .. k n + n - 1; slots past the last item are clipped to it
    and marked out of range.

    Example:
    >>> slots, in_range, n = share_slots(5, 2, 3)
    >>> slots.numpy().tolist(), in_range.numpy().tolist(), n
    ([4, 4], [True, False], 2)
    """
    static = tf.get_static_value(num_items)
    per_share = -(-int(static) // count) if static is not None else (num_items + count - 1) // count
    slots = index * per_share + tf.range(per_share)
    return tf.minimum(slots, tf.maximum(num_items - 1, 0)), slots < num_items, per_share


class PairTile(NamedTuple):
    """Rows against columns of a batch: the pairs (row, column) counted in a share.

    ``rows`` [r] and ``columns`` [c] are sample ids (clipped into the batch) with masks
    ``rows_in`` / ``columns_in``; a pair counts when both are in and they differ. It
    adds to its row's loss, and to its column's where ``column_totals`` [c] is True
    (else the reverse pair is a row of the same tile).

    Example:
    >>> tile = pair_tiles(3, 0, 1)[0]
    >>> tile.rows.numpy().tolist(), tile.column_totals.numpy().tolist()
    ([0, 1, 2], [False, False, False])
    """

    rows: tf.Tensor
    rows_in: tf.Tensor
    columns: tf.Tensor
    columns_in: tf.Tensor
    column_totals: tf.Tensor


def pair_tiles(num_samples, index, count):
    """The tiles of share ``index`` of ``count`` of a batch's unordered pairs.

    The batch splits into ``count`` chunks of n = ceil(G / count) samples. Share i holds
    the pairs within chunk i (as rows: both orders) and, counted for both samples, those
    of chunk i with chunks i + 1 .. i + h, h = (count - 1) // 2 (modulo count). For an
    even count, chunks i and i + count / 2 are h + 1 apart both ways: chunk
    max(i, i + count / 2 mod count) is cut in halves, the first half's pairs with the
    other chunk go to the lower share, the second half's to the upper. Every share
    computes about n^2 (count + 1) / 2 pairs: all shares G^2 / 2 (1 + 1 / count), about
    half of one device's G^2.

    Args:
        num_samples: G (int or int32 scalar).
        index: the share (int or int32 scalar), in [0, count).
        count: Python int >= 1.

    Returns:
        A list of ``PairTile``: one, or two for an even count.

    Example:
    >>> tiles = pair_tiles(8, 0, 4)
    >>> [(t.rows.numpy().tolist(), t.columns.numpy().tolist()) for t in tiles]
    [([0, 1], [0, 1, 2, 3]), ([4], [0, 1])]
    """
    rows, rows_in, size = share_slots(num_samples, index, count)
    chunks = [share_slots(num_samples, (index + step) % count, count) for step in range((count - 1) // 2 + 1)]
    # The chunk's own columns are rows of the tile too: their pairs count on the rows only.
    totals = tf.range(size * len(chunks)) >= size
    tiles = [PairTile(rows, rows_in, tf.concat([c[0] for c in chunks], 0), tf.concat([c[1] for c in chunks], 0), totals)]
    if count % 2 == 0:
        other = (index + count // 2) % count
        low, high = tf.minimum(index, other), tf.maximum(index, other)
        half = -(-size // 2) if isinstance(size, int) else (size + 1) // 2
        offsets = tf.where(index < count // 2, 0, half) + tf.range(half)
        ids = high * size + tf.minimum(offsets, tf.maximum(size - 1, 0))
        half_in = tf.logical_and(offsets < size, ids < num_samples)
        columns, columns_in, _ = share_slots(num_samples, low, count)
        tiles.append(
            PairTile(tf.minimum(ids, tf.maximum(num_samples - 1, 0)), half_in, columns, columns_in, tf.ones_like(columns_in))
        )
    return tiles


def sorted_rows(labels, index, count):
    """Share ``index`` of ``count`` of the anchors, whole classes together.

    The batch sorted by label (stable) is cut into runs of n = ceil(G / count) rows; the
    last run is pulled back to end at G, its rows already in the run before marked not
    counted. With the P x K sampler's batches (K samples per class, n a multiple of K)
    a run holds whole classes whatever the batch order.

    Args:
        labels: int [G].
        index: the share (int or int32 scalar).
        count: Python int >= 1.

    Returns:
        ``(order [G], start, n, counted [n])``: ``order`` sorts the batch by label; the
        share's anchors are sorted rows start .. start + n - 1, those with ``counted``.

    Example:
    >>> order, start, n, counted = sorted_rows(tf.constant([1, 0, 1, 0, 2]), 2, 3)
    >>> order.numpy().tolist(), int(start), n, counted.numpy().tolist()
    ([1, 3, 0, 2, 4], 3, 2, [False, True])
    """
    num_samples = labels.shape[0] if labels.shape[0] is not None else tf.shape(labels)[0]
    size = share_slots(num_samples, index, count)[2]
    start = tf.maximum(tf.minimum(index * size, num_samples - size), 0)
    counted = start + tf.range(size) >= index * size
    return tf.argsort(labels, stable=True), start, size, counted


__all__ = ["PairTile", "check_share", "pair_tiles", "share_slots", "sorted_rows"]
