"""The IVF (inverted file) backend of ``Index``: coarse lists, defaults, growth and rebalancing.

``Index(backend="ivf")`` keeps an ``IVF``: k-means centroids (``retrieval.
kmeans``) and the list of every gallery item. A query probes the ``probes``
lists of nearest centroids and is compared with their items only
(``retrieval.ivf_search``, standard TensorFlow ops, also inside the exported
SavedModel).

Defaults, from the gallery size N when the lists are trained (on the first
search or save, or ``train``):

- lists: ``ivf_lists.DEFAULT_LISTS`` (``default_lists``): 1,000 lists at 10^6,
  12 at 200 items, 3 at 48;
- probes: calibrated on the gallery itself: ``CALIBRATION_QUERIES`` gallery
  items are searched exactly (k = 10, the item itself left out) and the
  smallest number of lists whose union holds ``TARGET_RECALL`` of their true
  top 10 is kept (with the safety factor ``PROBE_MARGIN``). Both can be set;
  the probes also per call. ``"faiss_ivf"`` (``retrieval.ann``) takes the
  same options with the same defaults and checks (``list_options``,
  ``lists_for``, ``calibrate_probes``).

Probes given with the index never exceed its lists (``ivf_lists.check_probes``,
also the command line's check): refused when the index is made with both,
and, with the default lists, when the lists are trained (the first moment the
gallery's size, hence the number of lists, is known). Probes given to one
search call are clipped to the lists (every list: the exact answer).

Growth: items added after training go to their nearest list (the centroids
stay); removed items leave their lists. When the largest list grows above
``UNBALANCED`` times its size at training (relative to the mean), or the
gallery to twice its trained size, ``needs_rebuild`` is True and a warning is
logged once: ``index.ivf.train(index.references, index.sq_norms)`` retrains.

Codes: ``codes="int8"`` keeps the rows as int8 codes (``retrieval.ivf_codes``:
a quarter of the memory; the quantiser is fitted on the first rows added).
Training decodes only its sample, assignment a block at a time, and the
probes are calibrated on at most ``CALIBRATION_ROWS`` gallery rows.
"""

import logging
import math

import numpy as np

import tensorflow as tf

from rankloss_tf.evaluation.neighbours import chunk_size_for, search_top_k
from rankloss_tf.retrieval.ivf_codes import Quantiser, check_codes
from rankloss_tf.retrieval.ivf_lists import DEFAULT_LISTS, LIST_BACKENDS, check_probes, default_lists, lists_for
from rankloss_tf.retrieval.ivf_search import search_function
from rankloss_tf.retrieval.kmeans import assign, train_centroids

__all__ = ["DEFAULT_LISTS", "IVF", "LIST_BACKENDS", "check_probes", "default_lists", "ivf_for", "list_options",
           "lists_for"]

log = logging.getLogger(__name__)

TARGET_RECALL = 0.95
PROBE_MARGIN = 1.25
CALIBRATION_QUERIES = 256
CALIBRATION_K = 10
CALIBRATION_ROWS = 1_000_000  # larger galleries: probes calibrated on this many rows (and their lists)
UNBALANCED = 2.0
CALIBRATION_SCRATCH = 2**24  # floats of one [queries, chunk] score block of the calibration search (64 MB)


def list_options(backend, lists=None, probes=None, codes=None):
    """``(lists, probes)`` of an ``Index`` of ``backend``, checked: one vocabulary for "ivf" and "faiss_ivf".

    Raises:
        ValueError: lists or probes given for a backend without lists (not
            in ``LIST_BACKENDS``), codes for another backend than "ivf", lists
            or probes not positive integers, more probes than lists
            (``check_probes``; with the default lists, checked at training).

    Example:
    >>> list_options("faiss_ivf", lists=64), list_options("exact")
    ((64, None), (None, None))
    """
    if (backend not in LIST_BACKENDS and (lists is not None or probes is not None)) or (
            backend != "ivf" and codes is not None):
        raise ValueError(f"`lists` and `probes` apply to backend='ivf' or 'faiss_ivf', `codes` to backend='ivf' only. "
                         f"Received: backend={backend!r}, lists={lists!r}, probes={probes!r}, codes={codes!r}")
    lists, probes = _check_count(lists, "lists"), _check_count(probes, "probes")
    return lists, check_probes(probes, lists)


def ivf_for(backend, metric, lists=None, probes=None, codes=None):
    """The ``IVF`` of an ``Index`` of ``backend`` ("ivf"), else None; options checked by ``list_options``.

    Raises:
        ValueError: see ``list_options``; codes not one of ``ivf_codes.CODES``.

    Example:
    >>> ivf_for("ivf", "cosine", probes=8).probes, ivf_for("exact", "cosine")
    (8, None)
    """
    lists, probes = list_options(backend, lists, probes, codes)
    return IVF(metric, lists, probes, codes or "float32") if backend == "ivf" else None


def _check_count(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer or None. Received: {name}={value!r}")
    return int(value)


GATHER_BLOCK = 262144  # rows copied into a ``gathered_variable`` at a time


def gathered_variable(rows, order, name, decode=None):
    """A variable holding ``rows[order]`` (``decode``d: codes -> floats), filled a block at a time.

    Converting a large numpy array to a tensor copies it (twice, transiently);
    here the slices are assigned in place (``ResourceStridedSliceAssign`` on
    the fresh variable's only buffer), so the caller holds the rows, the
    variable and one block.

    Example:
    >>> gathered_variable(np.array([[1], [2], [3]], np.int8), np.array([2, 0]), "rows").numpy().tolist()
    [[3], [1]]
    """
    decode = decode or (lambda block: block)
    dtype = decode(rows[:0]).dtype
    variable = tf.Variable(lambda: tf.zeros((len(order), rows.shape[1]), dtype), trainable=False, name=name)
    for start in range(0, len(order), GATHER_BLOCK):
        block = decode(rows[order[start : start + GATHER_BLOCK]])
        tf.raw_ops.ResourceStridedSliceAssign(ref=variable.handle, begin=[start], end=[start + len(block)],
                                              strides=[1], value=block)
    return variable


def calibrate_probes(rows, sq_norms, centroids, assignment, metric, target=TARGET_RECALL, seed=0, decode=None):
    """The fewest lists probed that find ``target`` of the exact top 10 of sample gallery queries.

    Example:
    >>> rows = np.array([[0.0], [0.1], [5.0], [5.1]], np.float32)
    >>> calibrate_probes(rows, np.square(rows[:, 0]), np.array([[0.05], [5.05]], np.float32),
    ...                  np.array([0, 0, 1, 1]), "l2")
    2
    """
    rng = np.random.default_rng(seed)
    if len(rows) > CALIBRATION_ROWS or decode is not None:  # a sample of the gallery (decoded codes)
        subset = np.sort(rng.choice(len(rows), min(len(rows), CALIBRATION_ROWS), replace=False))
        rows, assignment = gathered_variable(rows, subset, "calibration_rows", decode), assignment[subset]
        sq_norms = None if sq_norms is None else np.asarray(sq_norms)[subset]
    n = len(assignment)
    k = min(CALIBRATION_K, n - 1)
    if k < 1 or len(centroids) == 1:
        return 1
    picked = rng.choice(n, min(CALIBRATION_QUERIES, n), replace=False)
    rows = tf.convert_to_tensor(rows)  # one tensor for every chunk (a variable's: no copy)
    queries = tf.gather(rows, picked)
    l2 = metric == "l2"
    chunk = chunk_size_for(n, len(queries), k + 1, CALIBRATION_SCRATCH)
    top = search_top_k(queries, rows, k + 1, sq_norms if l2 else None, chunk).indices.numpy()
    queries = queries.numpy()
    truth = np.array([[j for j in row if j != i][:k] for row, i in zip(top, picked)])
    coarse = queries @ centroids.T
    if l2:
        coarse = 2.0 * coarse - np.sum(np.square(centroids), axis=1)[None, :]
    rank_of_list = np.argsort(np.argsort(-coarse, axis=1, kind="stable"), axis=1)
    needed = np.take_along_axis(rank_of_list, assignment[truth], axis=1).ravel() + 1
    enough = int(np.quantile(needed, target, method="higher"))
    return int(min(len(centroids), math.ceil(enough * PROBE_MARGIN)))


class IVF:
    """Coarse lists of an ``Index``'s gallery (see the module docstring).

    Args:
        metric: the index's metric, "cosine" or "l2".
        lists: number of lists, or None for ``default_lists(N)`` at training.
        probes: lists probed per query, or None to calibrate at training.
        codes: "float32" (rows as given) or "int8" (``retrieval.ivf_codes``).

    Raises:
        ValueError: lists or probes not a positive integer, more probes than
            lists (``check_probes``: here, and by ``train`` once the gallery's
            size gives the default lists), unknown codes.

    Example:
    >>> ivf = IVF("cosine", lists=2)
    >>> rows = np.array([[1.0, 0.0], [0.9, 0.436], [0.0, 1.0], [0.2, 0.98]], np.float32)
    >>> ivf.train(rows, None)
    >>> sorted(np.bincount(ivf.assignment).tolist()), ivf.trained
    ([2, 2], True)
    """

    def __init__(self, metric, lists=None, probes=None, codes="float32"):
        self.metric = metric
        self.codes = check_codes(codes)
        self.quantiser = None
        self.lists = _check_count(lists, "lists")
        self.probes = check_probes(_check_count(probes, "probes"), self.lists)
        self._fixed_probes = self.probes is not None
        self.centroids = None
        self.assignment = np.zeros((0,), np.int32)
        self._trained_size = 0
        self._trained_peak = 1.0
        self._warned = False
        self._layout = self._tensors = None

    @property
    def trained(self):
        """Whether the centroids exist."""
        return self.centroids is not None

    @property
    def _decode(self):
        """codes -> float rows (None for float rows)."""
        return None if self.quantiser is None else self.quantiser.decode

    def encode(self, references, sq_norms):
        """The stored form ``(rows, sq_norms)`` of prepared float rows ``[n, D]``: as given, or int8 codes.

        The first rows encoded fit the quantiser; squared norms (L2, else None)
        become those of the decoded rows.
        """
        if self.codes == "float32" or not len(references):
            return references, sq_norms
        if self.quantiser is None:
            self.quantiser = Quantiser.fit(references)
        codes = self.quantiser.encode(references)
        if sq_norms is not None:
            sq_norms = np.sum(np.square(self.quantiser.decode(codes), dtype=np.float64), axis=1).astype(np.float32)
        return codes, sq_norms

    def train(self, rows, sq_norms):
        """(Re)trains the centroids on the stored rows ``[N, D]`` (floats or codes) and reassigns every item."""
        rows = np.asarray(rows) if self.quantiser is not None else np.asarray(rows, np.float32)
        lists = lists_for(len(rows), self.lists)
        if self._fixed_probes:
            check_probes(self.probes, self.lists, len(rows))  # the default lists known now: before any work
        self.centroids = train_centroids(rows, lists, self.metric, decode=self._decode)
        self.assignment = assign(rows, self.centroids, self.metric, self._decode)
        if not self._fixed_probes:
            self.probes = calibrate_probes(rows, sq_norms, self.centroids, self.assignment, self.metric,
                                           decode=self._decode)
        self._trained_size, self._trained_peak = len(rows), self._peak()
        self._warned, self._layout, self._tensors = False, None, None
        log.info("IVF: %d lists over %d items, %d probed per query", lists, len(rows), self.probes)

    def restore(self, centroids, assignment, probes, trained_size, trained_peak, quantiser=None):
        """Sets a saved state (``retrieval.ivf_saved``); ``quantiser``: that of int8 codes, else None."""
        self.quantiser, self.codes = quantiser, "float32" if quantiser is None else "int8"
        self.centroids, self.assignment = np.asarray(centroids, np.float32), np.asarray(assignment, np.int32)
        self.probes, self._trained_size, self._trained_peak = int(probes), int(trained_size), float(trained_peak)
        self._layout = self._tensors = None

    def _peak(self):
        sizes = np.bincount(self.assignment, minlength=len(self.centroids))
        return float(sizes.max() / max(sizes.mean(), 1e-9)) if len(self.assignment) else 1.0

    def add(self, rows):
        """Puts new stored rows ``[n, D]`` (appended to the gallery; floats or codes) into their nearest lists."""
        if self.trained and len(rows):
            self.assignment = np.concatenate([self.assignment, assign(np.asarray(rows), self.centroids, self.metric,
                                                                      self._decode)])
            self._layout = self._tensors = None
            if self.needs_rebuild and not self._warned:
                self._warned = True
                log.warning("IVF lists are unbalanced (largest %.1fx the mean, %d items, trained on %d): "
                            "index.ivf.train(index.references, index.sq_norms) rebuilds them",
                            self._peak(), len(self.assignment), self._trained_size)

    def keep(self, mask):
        """Drops the items where the boolean ``mask [N]`` is False."""
        if self.trained:
            self.assignment, self._layout, self._tensors = self.assignment[mask], None, None

    @property
    def needs_rebuild(self):
        """True when the lists have become unbalanced or the gallery has doubled since training."""
        if not self.trained or not len(self.assignment):
            return False
        grown = len(self.assignment) > 2 * self._trained_size
        return grown or self._peak() > UNBALANCED * max(self._trained_peak, 1.0)

    def ensure(self, rows, sq_norms):
        """Trains on the gallery if not trained yet."""
        if not self.trained:
            self.train(rows, sq_norms)

    def layout(self):
        """``(order int32 [N], offsets int32 [lists + 1])``: gallery positions sorted by list, list bounds."""
        if self._layout is None:
            order = np.argsort(self.assignment, kind="stable").astype(np.int32)
            sizes = np.bincount(self.assignment, minlength=len(self.centroids))
            self._layout = order, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
        return self._layout

    def tables(self, rows, sq_norms, sort_rows=True):
        """The arrays of ``ivf_search.TABLES`` for the stored rows ``[N, D]`` (and their squared norms).

        ``sort_rows=False``: the rows are returned as given, not sorted by list
        (no copy of the gallery; ``positions`` sorts them, see
        ``ivf_saved.export_parts``).
        """
        order, offsets = self.layout()
        sq_norms = np.zeros(len(rows), np.float32) if sq_norms is None else np.asarray(sq_norms, np.float32)
        centroid_sq = np.sum(np.square(self.centroids, dtype=np.float64), axis=1).astype(np.float32)
        dim = self.centroids.shape[1]
        quantiser = self.quantiser or Quantiser(np.ones(dim, np.float32), np.zeros(dim, np.float32))
        rows = np.asarray(rows) if self.quantiser is not None else np.asarray(rows, np.float32)
        return (self.centroids, centroid_sq, rows[order] if sort_rows else rows, sq_norms[order], offsets, order,
                quantiser.scale,
                quantiser.offset)

    def search(self, rows, sq_norms, queries, k, probes=None, block_size=1024):
        """``(indices int32 [Nq, k], scores float32 [Nq, k])`` of raw queries; trains first if needed."""
        self.ensure(rows, sq_norms)
        probes = self.probes if probes is None else _check_count(probes, "probes")
        if self._tensors is None:
            self._tensors = [tf.constant(t) for t in self.tables(rows, sq_norms)]
        parts = [
            [t.numpy() for t in search_function(tf.constant(queries[start : start + block_size]), k, probes,
                                                self._tensors, self.metric, self.probes)]
            for start in range(0, len(queries), block_size)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
