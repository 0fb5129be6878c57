"""Hard negative class mining (Sohn 2016, section 3.2): batches of mutually confusable classes."""

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.data.sampler import PKSampler


class HardClassSampler(PKSampler):
    """Builds each batch's class set greedily from the classes that violate the margin most.

    Sohn (2016), "Improved Deep Metric Learning with Multi-class N-pair Loss
    Objective", section 3.2:
    1. ``refresh(embed_fn)``: draw C candidate classes at random and embed
       ``samples_per_candidate`` (1 or 2) samples of each with the current model.
    2. Per batch: pick a random seed class among the candidates, then add, one
       at a time, the candidate that violates the margin most with respect to
       the classes chosen so far, until P classes (ties broken at random).
    3. Draw K samples of each chosen class.

    Violation of candidate j for a chosen class i: with two samples per
    candidate (anchor a, positive p) the N-pair logit a_i . p_j - a_i . p_i;
    with one sample e, the similarity e_i . e_j. A candidate's score is its
    largest violation over the chosen classes.

    Memory and time stay O(C x neighbours): ``refresh`` keeps, for each
    candidate, only its ``neighbours`` most violating candidates (blocked matmul +
    top-k, never a C x C matrix), and building a batch costs O(C x P). Before
    the first refresh, batches hold random classes.

    It is a ``PKSampler`` that overrides only ``select_classes``: seeds, sample
    draws, decoding, epochs (C // P batches each, every batch with P classes)
    and prefetching are the P x K sampler's. Batches read the latest
    ``refresh`` when they are built (prefetched batches may predate it).

    Args:
        data, labels, decode_fn, short_classes: as for ``PKSampler``.
        classes_per_batch: P >= 2.
        samples_per_class: K >= 1 (2 for N-pair batches).
        num_candidates: C, the classes drawn at each refresh; None = all classes.
        samples_per_candidate: 1 or 2 samples embedded per candidate.
        neighbours: violating classes kept per candidate; None = min(C - 1, 4 P).
        embed_batch_size: batch size used to embed the candidates.
        seed: integer seed.

    Example:
    >>> x = np.random.default_rng(0).random((200, 8), dtype="float32")
    >>> y = np.repeat(np.arange(20), 10)
    >>> sampler = HardClassSampler(x, y, classes_per_batch=4, samples_per_class=2)
    >>> from rankloss_tf.losses import NPairLoss
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> model.compile(optimizer="adam", loss=NPairLoss())
    >>> history = model.fit(sampler.dataset(), steps_per_epoch=4, verbose=0,
    ...                     callbacks=[HardClassMining(sampler, every_n_batches=2)])
    >>> len(history.history["loss"])
    1
    """

    def __init__(
        self,
        data,
        labels=None,
        *,
        classes_per_batch,
        samples_per_class=2,
        decode_fn=None,
        short_classes="repeat",
        num_candidates=None,
        samples_per_candidate=2,
        neighbours=None,
        embed_batch_size=256,
        seed=0,
    ):
        if samples_per_candidate not in (1, 2):
            raise ValueError(
                f"`samples_per_candidate` must be 1 or 2. Received: samples_per_candidate={samples_per_candidate!r}"
            )
        super().__init__(data, labels, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class,
                         decode_fn=decode_fn, short_classes=short_classes, seed=seed)
        total = self._index.num_classes
        num_candidates = total if num_candidates is None else num_candidates
        if not classes_per_batch <= num_candidates <= total:
            raise ValueError(
                f"`num_candidates` must lie in [classes_per_batch={classes_per_batch}, usable classes={total}]. "
                f"Received: num_candidates={num_candidates!r}"
            )
        neighbours = min(num_candidates - 1, 4 * classes_per_batch) if neighbours is None else neighbours
        if not 1 <= neighbours < num_candidates:
            raise ValueError(
                f"`neighbours` must lie in [1, num_candidates - 1 = {num_candidates - 1}]. "
                f"Received: neighbours={neighbours!r}"
            )
        self.samples_per_candidate = samples_per_candidate
        self.embed_batch_size = embed_batch_size
        self._rng = np.random.default_rng(seed)
        self._candidates = tf.Variable(self._rng.permutation(total)[:num_candidates].astype(np.int64), trainable=False)
        self._neighbours = tf.Variable(tf.zeros([num_candidates, neighbours], tf.int64), trainable=False)
        self._violations = tf.Variable(tf.fill([num_candidates, neighbours], -np.inf), trainable=False)

    def refresh(self, embed_fn, block_size=1024):
        """Draws new candidate classes and ranks their violations with ``embed_fn``.

        Args:
            embed_fn: callable mapping a batch of examples to embeddings [B, D]
                (e.g. the model in inference mode).
            block_size: candidate rows per block of the violation matmul.
        """
        num_candidates = int(self._candidates.shape[0])
        candidates = self._rng.permutation(self._index.num_classes)[:num_candidates]
        seed = tf.constant(self._rng.integers(0, 2**31, size=2), tf.int64)
        indices = tf.reshape(self._index.draw(candidates, seed, samples=self.samples_per_candidate), [-1])
        embedded = self._source.batches(
            tf.data.Dataset.from_tensor_slices(indices).batch(self.embed_batch_size),
            self.embed_batch_size,
            tf.data.AUTOTUNE,
        )
        parts = [np.asarray(keras.ops.convert_to_numpy(embed_fn(examples))) for examples, _ in embedded]
        embeddings = tf.reshape(
            tf.constant(np.concatenate(parts), tf.float32), [num_candidates, self.samples_per_candidate, -1]
        )
        neighbours, violations = _most_violating(embeddings, int(self._neighbours.shape[1]), block_size)
        self._candidates.assign(candidates.astype(np.int64))
        self._neighbours.assign(neighbours)
        self._violations.assign(violations)

    @tf.function
    def select_classes(self, seed, positions=None):
        """Greedily picks P candidate classes for one batch (in TensorFlow).

        Overrides ``PKSampler.select_classes``: the epoch's next group of
        classes (``positions``) is not used; every batch holds P classes.

        Args:
            seed: stateless seed, int tensor [2].
            positions: not used.

        Returns:
            int64 tensor [P] of class positions (indices into ``classes``).
        """
        num_candidates = int(self._candidates.shape[0])
        positions = tf.range(num_candidates, dtype=tf.int64)
        tie_break = tf.random.stateless_uniform([num_candidates], seed)
        first = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, 1), 0, num_candidates, tf.int64
        )
        chosen = tf.equal(positions, first)
        score = tf.fill([num_candidates], tf.constant(-np.inf, tf.float32))
        picked = tf.TensorArray(tf.int64, size=self.classes_per_batch).write(0, first)
        last = first
        for step in tf.range(1, self.classes_per_batch):
            score = tf.tensor_scatter_nd_max(
                score, tf.gather(self._neighbours, last)[:, tf.newaxis], tf.gather(self._violations, last)
            )
            open_score = tf.where(chosen, -np.inf, score)
            best = tf.logical_and(tf.logical_not(chosen), tf.equal(open_score, tf.reduce_max(open_score)))
            last = tf.argmax(tf.where(best, tie_break, -1.0), output_type=tf.int64)
            chosen = tf.logical_or(chosen, tf.equal(positions, last))
            picked = picked.write(step, last)
        return tf.gather(self._candidates, picked.stack())


def _most_violating(embeddings, neighbours, block_size):
    """Top-``neighbours`` violating candidates of every candidate, computed in row blocks.

    Args:
        embeddings: [C, m, D] with m = 1 (similarity) or 2 (N-pair logit).

    Returns:
        (indices [C, neighbours] int64, violations [C, neighbours] float32).
    """
    anchors = embeddings[:, 0]
    positives = embeddings[:, -1]
    own = tf.reduce_sum(anchors * positives, axis=1) if embeddings.shape[1] == 2 else tf.zeros_like(anchors[:, 0])
    num = int(embeddings.shape[0])
    indices, values = [], []
    for start in range(0, num, block_size):
        rows = tf.range(start, min(start + block_size, num))
        logits = tf.matmul(tf.gather(anchors, rows), positives, transpose_b=True) - tf.gather(own, rows)[:, tf.newaxis]
        logits = tf.where(tf.one_hot(rows, num, on_value=True, off_value=False), -np.inf, logits)
        top = tf.math.top_k(logits, k=neighbours)
        values.append(top.values)
        indices.append(tf.cast(top.indices, tf.int64))
    return tf.concat(indices, 0), tf.concat(values, 0)


class HardClassMining(keras.callbacks.Callback):
    """Keras callback refreshing a ``HardClassSampler`` with the model being trained.

    Refreshes at the start of training and then every ``every_n_batches``
    batches, or at the start of every epoch when ``every_n_batches`` is None.

    Args:
        sampler: the ``HardClassSampler`` feeding ``model.fit``.
        embed_fn: callable examples -> embeddings; defaults to the trained
            model called with ``training=False``.
        every_n_batches: refresh period in batches; None = once per epoch.

    Example:
    >>> x = np.random.default_rng(1).random((120, 6), dtype="float32")
    >>> y = np.repeat(np.arange(12), 10)
    >>> sampler = HardClassSampler(x, y, classes_per_batch=3, samples_per_class=2)
    >>> callback = HardClassMining(sampler, every_n_batches=2)
    >>> from rankloss_tf.losses import TripletHardLoss
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    >>> model.compile(optimizer="sgd", loss=TripletHardLoss())
    >>> _ = model.fit(sampler.dataset(), steps_per_epoch=2, verbose=0, callbacks=[callback])
    >>> callback.sampler is sampler
    True
    """

    def __init__(self, sampler, embed_fn=None, every_n_batches=None):
        super().__init__()
        if every_n_batches is not None and every_n_batches < 1:
            raise ValueError(f"`every_n_batches` must be None or >= 1. Received: every_n_batches={every_n_batches!r}")
        self.sampler = sampler
        self.embed_fn = embed_fn
        self.every_n_batches = every_n_batches
        self._batches = 0

    def _refresh(self):
        self.sampler.refresh(self.embed_fn or (lambda examples: self.model(examples, training=False)))

    def on_train_begin(self, logs=None):
        self._batches = 0
        self._refresh()

    def on_epoch_begin(self, epoch, logs=None):
        if self.every_n_batches is None and epoch > 0:
            self._refresh()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.every_n_batches is not None and self._batches % self.every_n_batches == 0:
            self._refresh()
