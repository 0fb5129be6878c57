"""N-pair tuple machinery: the (anchor, positive) tuples of a batch, their rows and per-anchor losses.

``_tuple_losses`` forms the tuples of the whole batch (``masks.npair_tuples``), picks
those of a range of anchors or of a share, gathers their rows once (a gather whose
gradient gathers back) and computes a per-tuple term in blocks of tuples; the N-pair
and N-pair + angular kernels differ only in that term (``_npair_terms`` is the N-pair one).
"""

import tensorflow as tf

from rankloss_tf.ops.batch import _TEMPORARIES, _finish, _per_anchor_mean, _scatter_sum, _slice_rows, _static_or_dynamic
from rankloss_tf.ops.blocks import block_rows, blocked_rows
from rankloss_tf.ops.fused import Negatives, log1p_sum_exp
from rankloss_tf.ops.masks import npair_tuples
from rankloss_tf.ops.shares import share_slots


def _npair_terms(anchor_embeddings, own_positives, positives, others, variant):
    """Per-tuple N-pair terms of r tuples [r, D] against all T positives [T, D]: logits
    S_ij - S_ii with S_ij = f_i . f_j+ over the negatives ``others`` [r, T]."""
    own_similarities = tf.reduce_sum(anchor_embeddings * own_positives, axis=1)
    if variant == "mc":
        return log1p_sum_exp(anchor_embeddings, positives, own_similarities, others)
    similarities = tf.matmul(anchor_embeddings, positives, transpose_b=True)
    softplus = tf.math.softplus(similarities - own_similarities[:, None])
    return tf.reduce_sum(tf.where(others.mask(), softplus, tf.zeros([], softplus.dtype)), axis=1)


def _gather_groups(params, groups):
    """``tf.gather(params, ids)`` for each ``(ids [n], valid [n], pieces)`` of ``groups``, split
    into rows of the sizes ``pieces``, whose gradient gathers the rows back (no scatter-add).

    Within a group the valid ids are distinct; the invalid rows' gradients must be 0
    (the kernels' padding rows): they are left out. Returns the pieces of every group, in order.
    """
    size = tf.shape(params)[0]
    pieces = [len(group_pieces) for _, _, group_pieces in groups]
    slots = []
    for ids, valid, _ in groups:
        # slots[b]: sample b's row in the group; the group's size (a zero row appended) if none.
        count = tf.shape(ids)[0]
        slot = tf.math.unsorted_segment_max(tf.range(count), tf.where(valid, ids, size), size + 1)[:-1]
        slots.append(tf.where(slot < 0, count, slot))

    @tf.custom_gradient
    def gather(params, ids, *slots):
        def gradient(*upstream):
            # (A gather of these rows downstream may have made them tf.IndexedSlices.)
            upstream, backs = [tf.convert_to_tensor(d_rows) for d_rows in upstream], []
            for slot, count in zip(slots, pieces):
                d_rows, upstream = upstream[:count], upstream[count:]
                zero = tf.zeros([1, tf.shape(d_rows[0])[1]], d_rows[0].dtype)  # (d_rows[0] may have no row)
                backs.append(tf.gather(tf.concat(d_rows + [zero], axis=0), slot))
            return (tf.add_n(backs), None) + (None,) * len(slots)

        sizes = [piece for _, _, group_pieces in groups for piece in group_pieces]
        return tf.split(tf.gather(params, ids), tf.stack(sizes)), gradient

    return gather(params, tf.concat([ids for ids, _, _ in groups], axis=0), *slots)


def _tuple_losses(batch, tuple_terms, memory_budget, share=None):
    """Per-anchor losses of the N-pair tuples of the whole batch whose anchor is in the range.

    `tuple_terms(anchor_embeddings [r, D], own_positives [r, D], positives [T, D],
    others [r, T]) -> [r]` gives the term of r tuples against all T tuples, whose
    negatives are ``others``. With ``share`` (checked
    ``(index, count)``, the batch whole): only that share's tuples, losses [B].
    """
    anchors, positives, valid = npair_tuples(batch.labels)
    tuple_labels = tf.gather(batch.labels, anchors)
    num_tuples = _static_or_dynamic(anchors, 0)
    column_labels, column_valid = tuple_labels, valid  # the key columns: every tuple's positive
    if share is not None:
        picks, in_range, size = share_slots(num_tuples, *share)
        picks_valid = tf.logical_and(in_range, tf.gather(valid, picks))
    elif batch.whole:
        picks, size, picks_valid = tf.range(num_tuples), num_tuples, valid
    else:
        # The tuples whose anchor is among this range's anchors (at most `size`: a static bound).
        local = tf.logical_and(valid, tf.logical_and(anchors >= batch.start, anchors < batch.start + batch.size))
        size = tf.minimum(batch.size, num_tuples)
        picks = tf.argsort(tf.cast(tf.logical_not(local), tf.int32), stable=True)[:size]
        picks_valid = tf.gather(local, picks)

    # The picked tuples' anchor and own-positive rows [size, D] and every tuple's positive [T, D]:
    # one gather whose gradient gathers back (the valid tuples' samples are distinct).
    if batch.whole and share is None:
        anchor_rows, positive_rows = _gather_groups(
            batch.embeddings, [(tf.concat([anchors, positives], 0), tf.concat([valid, valid], 0), [num_tuples] * 2)])
        tensors = [anchor_rows, positive_rows, positive_rows]
    elif share is not None:
        # The share's tuples are a run from index * size: with the columns rotated to start
        # there, their own positives are the first `size` columns. One group of distinct samples.
        columns = (share[0] * size + tf.range(num_tuples)) % tf.maximum(num_tuples, 1)
        column_labels, column_valid = tf.gather(tuple_labels, columns), tf.gather(valid, columns)
        ids = tf.concat([tf.gather(anchors, picks), tf.gather(positives, columns)], 0)
        group = (ids, tf.concat([picks_valid, column_valid], 0), [size, size, num_tuples - size])
        anchor_rows, own_rows, other_rows = _gather_groups(batch.embeddings, [group])
        tensors = [anchor_rows, own_rows, tf.concat([own_rows, other_rows], 0)]
    else:
        picked = tf.concat([tf.gather(anchors, picks), tf.gather(positives, picks)], 0)
        tensors = _gather_groups(batch.embeddings, [(picked, tf.concat([picks_valid, picks_valid], 0), [size] * 2),
                                                    (positives, valid, [num_tuples])])
    picked_labels = tf.gather(tuple_labels, picks)

    def rows(tensors, start, size, constants):
        picks_valid, picked_labels, column_labels, column_valid = constants
        anchor_rows, own_rows = _slice_rows(tensors[0], start, size), _slice_rows(tensors[1], start, size)
        row_valid = _slice_rows(picks_valid, start, size)
        others = Negatives(_slice_rows(picked_labels, start, size), row_valid, column_labels, column_valid)
        terms = tuple_terms(anchor_rows, own_rows, tensors[2], others)
        return tf.where(row_valid, terms, tf.zeros([], terms.dtype))

    dim = _static_or_dynamic(batch.embeddings, 1)
    block = block_rows(size, num_tuples, dim, _TEMPORARIES["npair"], memory_budget)
    terms = blocked_rows(rows, tensors, size, block, (picks_valid, picked_labels, column_labels, column_valid))
    losses = _scatter_sum(terms, tf.gather(anchors, picks) - batch.start, picks_valid, batch.size)
    # No tuple (a batch of one): no row.
    no_rows = isinstance(num_tuples, int) and num_tuples == 0
    return _finish(batch, _per_anchor_mean(losses, tf.reduce_sum(tf.cast(valid, tf.int32)), batch.num_anchors()), no_rows)
