"""Per-anchor losses computed in blocks of anchor rows, recomputed in the backward pass.

A loss kernel that can give the losses of any range of anchor rows against the whole
batch (a "row function") needs only O(rows x B) memory for those rows. ``blocked_rows``
runs such a function over blocks of rows whose size comes from a memory budget, and
gives it a custom gradient that recomputes each block instead of keeping its [rows, B]
intermediates alive until the backward pass: peak memory O(block x B), not O(B^2).
When one block holds every row, the row function runs once with ordinary autodiff,
so small batches pay nothing for the blocking.
"""

import tensorflow as tf

DEFAULT_MEMORY_BUDGET = 3 * 2**29


def local_copies(tensors):
    """Identity copies of ``tensors`` made in the current graph, for a custom gradient to read.

    A custom gradient that reads a tensor of a graph further out than its own fails when
    the loss runs inside nested ``tf.cond`` branches (TensorFlow's cond_v2 can only hand
    a branch's gradient the tensors of that branch): the kernels' custom gradients read
    copies made where they run.

    Example:
    >>> [float(t) for t in local_copies([tf.constant(1.0)])]
    [1.0]
    """
    return [tf.identity(t) for t in tensors]


def block_rows(num_rows, num_columns, dim, temporaries, memory_budget=None):
    """Rows per block so that the block's intermediates fit in ``memory_budget`` bytes.

    A block of r rows keeps about ``temporaries`` float32 [r, num_columns] tensors plus
    its rows of the [r, dim] embeddings alive at once.

    Args:
        num_rows: rows to compute (int or scalar int32 tensor).
        num_columns: columns of each row (the batch or reference size).
        dim: embedding dimension.
        temporaries: how many [r, num_columns] float32 tensors the loss keeps at once.
        memory_budget: bytes (default ``DEFAULT_MEMORY_BUDGET``, 1.5 GiB).

    Returns:
        Rows per block, between 1 and ``num_rows``: a Python int when the sizes are
        static, else an int32 scalar tensor.

    Example:
    >>> int(block_rows(16384, 16384, 128, temporaries=16))
    1534
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ValueError(f"`memory_budget` must be a positive number of bytes. Received: memory_budget={memory_budget!r}")
    static = [tf.get_static_value(n) for n in (num_rows, num_columns, dim)]
    if all(n is not None for n in static):
        num_rows, num_columns, dim = (int(n) for n in static)
        return min(max(budget // max(4 * (temporaries * num_columns + 2 * dim), 1), 1), max(num_rows, 1))
    bytes_per_row = 4 * (temporaries * tf.cast(num_columns, tf.int64) + 2 * tf.cast(dim, tf.int64))
    rows = tf.cast(tf.constant(budget, tf.int64) // tf.maximum(bytes_per_row, 1), tf.int32)
    return tf.clip_by_value(rows, 1, tf.maximum(tf.cast(num_rows, tf.int32), 1))


def _block_starts(num_rows, block):
    """Start of block k: k * block, pulled back so that the last block ends at ``num_rows``."""
    return lambda k: tf.maximum(tf.minimum(k * block, num_rows - block), 0)


def _local_constants(constants, num_rows, num_columns, block):
    """Copies, made in the current graph, of the tensors among ``constants`` and the sizes.

    The recomputing gradient reads these copies, never a tensor of a graph further out: a
    ``tf.cond`` around the blocks (sizes known at run time) hands its gradient only the
    tensors of its branch, and a ``tf.GradientTape`` outside a ``tf.function`` builds that
    gradient in another graph than the function's.
    """

    def copy(value):
        return tf.identity(value) if tf.is_tensor(value) else value

    return tf.nest.map_structure(copy, (constants, num_rows, num_columns, block))


def _blocked(pair_fn, tensors, num_rows, num_columns, block, constants):
    """``pair_fn`` over all blocks of rows, with a block-by-block recomputing gradient."""
    constants, num_rows, num_columns, block = _local_constants(constants, num_rows, num_columns, block)
    num_blocks = (num_rows + block - 1) // block
    start_of = _block_starts(num_rows, block)

    def block_rows_of(k):
        start = start_of(k)
        rows = start + tf.range(block)
        # A pulled-back last block repeats rows of the one before: they count once.
        return start, rows, rows >= k * block

    @tf.custom_gradient
    def run(*inputs):
        inputs = local_copies(inputs)
        dtype = inputs[0].dtype

        def forward(k, values, totals):
            start, rows, fresh = block_rows_of(k)
            block_values, block_totals = pair_fn(inputs, start, block, fresh, constants)
            block_values = tf.where(fresh, block_values, tf.zeros([], dtype))
            return k + 1, tf.tensor_scatter_nd_add(values, rows[:, None], block_values), totals + block_totals

        initial = (tf.constant(0), tf.zeros([num_rows], dtype), tf.zeros([num_columns], dtype))
        _, values, totals = tf.while_loop(lambda k, *_: k < num_blocks, forward, initial)

        def gradient(upstream, upstream_totals=None):
            if upstream_totals is None:  # the column totals unused
                upstream_totals = tf.zeros([num_columns], dtype)

            def backward(k, grads):
                start, rows, fresh = block_rows_of(k)
                weights = tf.where(fresh, tf.gather(upstream, rows), tf.zeros([], upstream.dtype))
                # Fresh tensors inside the loop body: the tape must see the path from them.
                local = [tf.identity(x) for x in inputs]
                with tf.GradientTape() as tape:
                    tape.watch(local)
                    block_values, block_totals = pair_fn(local, start, block, fresh, constants)
                block_grads = tape.gradient(
                    [block_values, block_totals], local, output_gradients=[weights, upstream_totals]
                )
                # (A block's gradient may have lost a static size its input has: a loop variable keeps its shape.)
                return k + 1, [
                    g if b is None else tf.ensure_shape(g + tf.convert_to_tensor(b), g.shape) for g, b in zip(grads, block_grads)
                ]

            _, grads = tf.while_loop(
                lambda k, _: k < num_blocks, backward, (tf.constant(0), [tf.zeros_like(x) for x in inputs])
            )
            return grads

        return (values, totals), gradient

    return run(*tensors)


def _in_xla_context():
    """Whether the graph being built is compiled by XLA (``jit_compile=True``, e.g. Keras' default on GPUs)."""
    try:
        from tensorflow.python.ops import control_flow_util  # no public equivalent
    except ImportError:  # a TensorFlow without it: the run-time choice, as outside XLA
        return False
    graph = tf.compat.v1.get_default_graph()
    return not tf.executing_eagerly() and control_flow_util.GraphOrParentsInXlaContext(graph)


def blocked_pairs(pair_fn, tensors, num_rows, num_columns, block, constants=None):
    """Row values and column totals of a [num_rows, num_columns] computation, in blocks of rows.

    The form of a loss whose pairs (i, j) add to both row i and column j (each pair
    computed once): the blocks' column totals are summed. Blocks, memory and gradient as
    in ``blocked_rows``.

    Args:
        pair_fn: ``(tensors, start, size, fresh) -> (values [size], totals [num_columns])``
            for rows start .. start + size - 1, differentiable in ``tensors``; ``fresh``
            [size] bool marks the rows not computed by an earlier block (a pulled-back
            last block repeats some): the others must add nothing to the totals (their
            values are not read). With ``constants``, called as
            ``pair_fn(tensors, start, size, fresh, constants)``.
        tensors: list of float tensors the values are differentiated against.
        num_rows: number of rows (int or int32 scalar tensor).
        num_columns: length of the totals (int or int32 scalar tensor).
        block: rows per block (see ``block_rows``).
        constants: optional nest (tuple, dict, NamedTuple) of every other tensor
            ``pair_fn`` reads (labels, masks, ids), handed to it rather than closed over
            (see ``blocked_rows``).

    Returns:
        ``(values [num_rows], totals [num_columns])``, with the gradients of one
        ``pair_fn(tensors, 0, num_rows, all True)`` call.

    Example:
    >>> x = tf.constant([[1.0], [2.0], [3.0]])
    >>> def products(t, start, size, fresh):
    ...     pairs = t[0][start : start + size] * tf.transpose(t[0]) * tf.cast(fresh, tf.float32)[:, None]
    ...     return tf.reduce_sum(pairs, axis=1), tf.reduce_sum(pairs, axis=0)
    >>> [v.numpy().tolist() for v in blocked_pairs(products, [x], 3, 3, 2)]
    [[6.0, 12.0, 18.0], [6.0, 12.0, 18.0]]
    """
    if constants is None:
        call = lambda tensors, start, size, fresh, _: pair_fn(tensors, start, size, fresh)  # noqa: E731
    else:
        call = pair_fn
    static_rows, static_block = tf.get_static_value(num_rows), tf.get_static_value(block)
    dtype = tensors[0].dtype
    if static_rows == 0:
        return tf.zeros([0], dtype), tf.zeros([num_columns], dtype)
    if static_rows is not None and static_block is not None and static_block >= static_rows:
        return call(tensors, 0, int(static_rows), tf.ones([int(static_rows)], tf.bool), constants)
    if static_rows is not None and static_block is not None:
        # Python ints: XLA needs each block's slice size at compile time.
        return _blocked(call, tensors, int(static_rows), num_columns, int(static_block), constants)
    # Sizes known only at run time (Keras traces a None batch dimension): chosen at run time.
    num_rows, block = tf.convert_to_tensor(num_rows, tf.int32), tf.convert_to_tensor(block, tf.int32)
    if _in_xla_context():
        # XLA compiles for the concrete sizes but cannot compile the run-time choice (both
        # branches, with sizes it takes as dynamic): one block, as for static sizes that fit.
        return call(tensors, 0, num_rows, tf.ones([num_rows], tf.bool), constants)

    def one_block():
        # Copies here too: a custom gradient in `call` may read the inputs, sizes or constants.
        given, rows, _, _ = _local_constants(constants, num_rows, num_columns, block)
        return call(local_copies(tensors), 0, rows, tf.ones([rows], tf.bool), given)

    return tf.cond(
        block >= num_rows, one_block, lambda: _blocked(call, tensors, num_rows, num_columns, block, constants)
    )


def blocked_rows(row_fn, tensors, num_rows, block, constants=None):
    """``row_fn(tensors, 0, num_rows)``, computed in blocks of ``block`` rows when they do not fit.

    Every tensor ``row_fn`` reads besides ``tensors`` belongs in ``constants``: when the
    sizes are known only at run time the blocks sit in a ``tf.cond``, and a gradient
    taken by a ``tf.GradientTape`` outside the ``tf.function`` (a custom training loop)
    fails in TensorFlow's ``tf.cond`` gradient if the recomputing backward pass reads a
    tensor the function closed over. Python values (margins, options) may be closed over.

    Args:
        row_fn: ``(tensors, start, size) -> values [size]``, the values of rows
            start .. start + size - 1, differentiable in ``tensors``. Rows are
            independent: row i's value does not depend on the block it is in.
            ``start`` is the Python int 0 exactly when one call covers every row.
            With ``constants``, called as ``row_fn(tensors, start, size, constants)``.
        tensors: list of float tensors the values are differentiated against.
        num_rows: number of rows (int or int32 scalar tensor).
        block: rows per block (see ``block_rows``).
        constants: optional nest (tuple, dict, NamedTuple) of the other tensors
            ``row_fn`` reads, handed to it as its last argument (its leaves may also be
            Python values); not differentiated.

    Returns:
        Values [num_rows] (empty, without calling ``row_fn``, for no rows); gradients with respect to ``tensors`` equal those of one
        ``row_fn(tensors, 0, num_rows)`` call.

    Example:
    >>> x = tf.constant([[1.0], [2.0], [3.0]])
    >>> rows = lambda t, start, size: tf.reduce_sum(t[0][start : start + size] * t[0][None, :, 0], axis=1)
    >>> blocked_rows(rows, [x], 3, 2).numpy().tolist()
    [6.0, 12.0, 18.0]
    >>> scaled = lambda t, start, size, scale: scale[start : start + size] * t[0][start : start + size, 0]
    >>> blocked_rows(scaled, [x], 3, 2, constants=tf.constant([1.0, 0.0, 2.0])).numpy().tolist()
    [1.0, 0.0, 6.0]
    """

    def pair_fn(tensors, start, size, fresh, given):
        values = row_fn(tensors, start, size) if constants is None else row_fn(tensors, start, size, given)
        return values, tf.zeros([0], tensors[0].dtype)

    return blocked_pairs(pair_fn, tensors, num_rows, 0, block, () if constants is None else constants)[0]
