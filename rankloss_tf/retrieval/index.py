"""``Index``: a gallery of embedded images (id, label, source path) with exact or approximate search.

The gallery is kept as *prepared* references (``evaluation.neighbours.
prepare_references``: unit rows for the cosine metric, rows and squared norms
for L2), prepared row by row when items are added, so that an index grown by
``add`` / ``remove`` holds exactly the numbers of an index built at once from
its final gallery. Exact search is the evaluation kernel (blocked matmul +
top-k, reference chunks, ties to the earlier item): ``search`` answers the
neighbours ``evaluation.nearest_neighbours`` finds.

The items are ONE table (``retrieval.items.Items``); ``save_index`` /
``load_index`` (``rankloss_tf.retrieval.saved_model``, free functions that
import this module; only the deprecated ``Index.save`` / ``Index.load`` import
them back, when called) write and read an index as a SavedModel. A loaded index is a program: load only indexes you trust.
"""

import collections
import warnings

import numpy as np
import tensorflow as tf

from rankloss_tf.evaluation.neighbours import (
    METRICS,
    chunk_size_for,
    prepare_references,
    scores_to_values,
    search_top_k,
    unit_rows,
)
from rankloss_tf.images import check_images
from rankloss_tf.retrieval import ann
from rankloss_tf.retrieval.ivf import ivf_for, list_options  # IVF hook
from rankloss_tf.retrieval.embedder import as_embedder
from rankloss_tf.retrieval.items import Items, check_labels

__all__ = ["Index", "SearchResult"]

SearchResult = collections.namedtuple("SearchResult", ["ids", "scores", "labels", "paths", "indices"])
SearchResult.__doc__ = """Neighbours of each query, best first, all ``[Nq, k]``.

Fields: ``ids`` (str), ``scores`` (float32: cosine similarity, descending, or
L2 distance, ascending), ``labels`` (int64), ``paths`` (str, "" where
unknown), ``indices`` (int32 positions in the gallery).

Example:
>>> index = Index()
>>> index.add_embeddings([[1.0, 0.0], [0.0, 1.0]], labels=[3, 4], ids=["x", "y"])
>>> index.search_embeddings([[0.9, 0.1]], k=1).ids.tolist()
[['x']]
"""


def prepare_queries(embeddings, metric):
    """Queries as the kernel takes them: unit rows for cosine, else as given (float32)."""
    return unit_rows(embeddings) if metric == "cosine" else tf.cast(embeddings, tf.float32)


def exact_search(embeddings, references, sq_norms, k, metric, chunk_size):
    """``(indices [b, k], values [b, k])`` of raw query embeddings against prepared references (graph code)."""
    queries = prepare_queries(embeddings, metric)
    top = search_top_k(queries, references, k, sq_norms, chunk_size)
    return top.indices, scores_to_values(queries, top.values, metric)


_exact_search = tf.function(exact_search, reduce_retracing=True)


def _check_embeddings(embeddings, name, dim=None):
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] < 1 or (dim is not None and embeddings.shape[1] != dim):
        want = f"[N, {dim}]" if dim is not None else "[N, D]"
        raise ValueError(f"`{name}` must be a {want} array. Received: shape={embeddings.shape}")
    if not np.issubdtype(embeddings.dtype, np.number) or not np.all(np.isfinite(embeddings)):
        raise ValueError(f"`{name}` must hold finite numbers. Received: dtype={embeddings.dtype} with non-finite values")
    return embeddings.astype(np.float32, copy=False)


def _repeated_ids(ids, tables):
    """The ids of ``ids`` given twice or already in one of ``tables`` (no set of the whole gallery is built)."""
    new = set(ids.tolist())
    repeated = {i for i, count in collections.Counter(ids.tolist()).items() if count > 1}
    for table in tables:
        if not new.isdisjoint(table.ids):  # iterates the table's ids, looked up in the new ones
            repeated |= new.intersection(table.ids)
    return repeated


class Index:
    """A searchable gallery: per item an id (str), a label (int) and a source path.

    Args:
        model: what embeds images: a Keras model, an exported SavedModel (its
            path or a ``SavedModelEmbedder``), a ``.keras`` file or a run
            directory; None for an index of embeddings only (``add_embeddings``
            / ``search_embeddings``). A SavedModel is a program (loading it
            runs its graph): pass only models and indexes you trust.
        metric: ``"cosine"`` (scores = cosine similarities, descending) or
            ``"l2"`` (scores = Euclidean distances, ascending).
        backend: ``"exact"`` (default); ``"ivf"``: inverted lists searched
            in Python and inside the exported SavedModel
            (``rankloss_tf.retrieval.ivf``); or an approximate backend of
            ``rankloss_tf.retrieval.ann`` (``"faiss"``, ``"usearch"``,
            ``"faiss_ivf"``; pip extra ``rankloss-tf[ann]``) used by ``search`` in Python, whose
            export searches exactly.
        block_size: query rows per matmul of the exact search.
        items: the gallery as an ``Items`` table of *prepared* rows (what
            ``load_index`` passes); None starts empty.
        lists, probes: the number of inverted lists and of lists probed per
            query (``backend="ivf"`` or ``"faiss_ivf"`` only; None: chosen
            from the gallery, see ``retrieval.ivf``); never more probes than
            lists (``ivf.check_probes``: refused here, or, with the default
            lists, when the lists are trained on the first search or save).
        codes: ``backend="ivf"`` only: "float32" (default) or "int8": rows
            kept as int8 codes, a quarter of the memory
            (``retrieval.ivf_codes``; the decoded rows are the gallery).

    Raises:
        ValueError: unknown metric or backend; lists, probes or codes for a
            backend without them, or not positive integers, or more probes
            than lists (the message names what was received).

    Example:
    >>> index = Index(metric="l2")
    >>> index.add_embeddings([[0.0], [1.0], [3.0]], labels=[0, 0, 1], ids=["a", "b", "c"])
    >>> result = index.search_embeddings([[2.6]], k=2)
    >>> result.ids.tolist(), [round(float(s), 2) for s in result.scores[0]], result.labels.tolist()
    ([['c', 'b']], [0.4, 1.6], [[1, 0]])
    """

    def __init__(self, model=None, metric="cosine", backend="exact", block_size=1024, items=None, lists=None,
                 probes=None, codes=None):
        if metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}. Received: metric={metric!r}")
        if int(block_size) < 1:
            raise ValueError(f"`block_size` must be a positive integer. Received: block_size={block_size}")
        self.metric = metric
        self.block_size = int(block_size)
        self.embedder = None if model is None else as_embedder(model)
        self._backend_name = ann.check_backend(backend)
        self._list_options = list_options(backend, lists, probes, codes)  # (lists, probes), checked
        self.ivf = ivf_for(backend, metric, *self._list_options, codes)  # IVF hook: None unless backend="ivf"
        self._backend = None
        self._tensors = None
        self.items = Items.empty() if items is None else items

    @property
    def items(self):
        """The gallery, an ``Items`` table (the parts added since the last read joined once, here)."""
        if self._parts:
            self._items = Items.join([self._items, *self._parts])
            self._parts = []
        return self._items

    @items.setter
    def items(self, items):
        self._items, self._parts = items, []

    def __len__(self):
        return len(self._items) + sum(map(len, self._parts))

    # The columns of the table, read-only (``add_embeddings`` / ``remove`` change the table).
    references = property(lambda self: self.items.references,
                          doc="float32 ``[N, D]`` prepared rows (int8 codes with ``codes='int8'``).")
    sq_norms = property(lambda self: self.items.sq_norms, doc="float32 ``[N]`` squared norms (L2; else zeros).")
    ids = property(lambda self: self.items.ids, doc="str ``[N]`` item ids.")
    labels = property(lambda self: self.items.labels, doc="int64 ``[N]`` labels.")
    paths = property(lambda self: self.items.paths, doc="str ``[N]`` source paths.")

    @property
    def backend(self):
        """The backend's name (``"exact"``, ``"ivf"``, or one of ``retrieval.ann``)."""
        return self._backend_name

    @property
    def list_options(self):
        """``(lists, probes)`` as given to ``"ivf"`` / ``"faiss_ivf"`` (None: chosen from the gallery)."""
        return self._list_options

    @property
    def embedding_dim(self):
        """``D``, or None before the first item."""
        table = self._parts[-1] if self._parts else self._items  # no join of the parts
        return table.references.shape[1] if len(table) else None

    def embed(self, images):
        """Embeds uint8 images ``[N, H, W, C]`` (any size; gray, RGB or RGBA) with the index's model.

        Raises:
            ValueError: no model, or images that are not uint8 ``[N, H, W, C]``
                with C in (1, 3, 4).
        """
        if self.embedder is None:
            raise ValueError("This index has no model; use add_embeddings / search_embeddings. Received: model=None")
        images = check_images(images)
        if not images.shape[0]:  # no query: no forward pass (a model's batch-norm refuses an empty batch)
            return np.zeros((0, self.embedding_dim or 0), np.float32)
        return np.asarray(self.embedder(images), np.float32)

    def add(self, images, labels, ids=None, paths=None):
        """Embeds and adds images; see ``add_embeddings`` for the other arguments."""
        self.add_embeddings(self.embed(images), labels, ids, paths)

    def add_embeddings(self, embeddings, labels, ids=None, paths=None):
        """Adds items to the gallery.

        Args:
            embeddings: float ``[N, D]``.
            labels: int ``[N]`` class labels.
            ids: ``[N]`` unique strings (default: the running item numbers as
                strings, "0", "1", ...).
            paths: ``[N]`` source paths, or None ("" for every item).

        Raises:
            ValueError: mismatched lengths or dimension, non-finite values,
                non-integer labels or labels outside int64 (never wrapped), or an
                id already in the index or given twice.
        """
        embeddings = _check_embeddings(embeddings, "embeddings", self.embedding_dim)
        n = embeddings.shape[0]
        labels = check_labels(labels, n)
        ids = np.arange(len(self), len(self) + n).astype(str) if ids is None else np.asarray(ids)
        ids = np.array([str(i) for i in ids.tolist()], object)
        paths = np.full(n, "", object) if paths is None else np.array([str(p) for p in np.asarray(paths).tolist()], object)
        if ids.shape != (n,) or paths.shape != (n,):
            raise ValueError(f"`ids` and `paths` must have {n} entries. Received: {ids.shape} and {paths.shape}")
        repeated = sorted(_repeated_ids(ids, [self._items, *self._parts]))
        if repeated:
            raise ValueError(f"Item ids must be unique in the index. Received: duplicate ids {repeated[:5]}")
        if n == 0:
            return
        references, sq_norms = prepare_references(embeddings, self.metric)
        references, sq_norms = references.numpy(), None if sq_norms is None else sq_norms.numpy()
        if self.ivf is not None:  # IVF hook: rows stored as int8 codes with codes="int8"
            references, sq_norms = self.ivf.encode(references, sq_norms)
        sq_norms = np.zeros(n, np.float32) if sq_norms is None else sq_norms
        self._parts.append(Items(references, sq_norms, ids, labels, paths))  # joined on the next read: no copy
        self._backend = self._tensors = None
        if self.ivf is not None:  # IVF hook: new items go to their nearest lists
            self.ivf.add(references)

    def remove(self, ids):
        """Removes items by id; the others keep their order.

        Raises:
            ValueError: an id not in the index.
        """
        ids = [str(i) for i in np.atleast_1d(np.asarray(ids, object)).tolist()]
        missing = sorted(set(ids) - set(self.ids.tolist()))
        if missing:
            raise ValueError(f"Cannot remove ids that are not in the index. Received: {missing[:5]}")
        keep = ~np.isin(self.ids, ids)
        self.items = self.items.select(keep)
        self._backend = self._tensors = None
        if self.ivf is not None:  # IVF hook
            self.ivf.keep(keep)

    def search(self, images, k=5, probes=None):
        """The k gallery items nearest to each query image; see ``search_embeddings``."""
        return self.search_embeddings(self.embed(images), k, probes)

    def search_embeddings(self, embeddings, k=5, probes=None):
        """The k gallery items nearest to each query embedding.

        Args:
            embeddings: float ``[Nq, D]`` query embeddings.
            k: number of neighbours, ``1 <= k <= len(index)``.
            probes: lists probed per query (``backend="ivf"`` or
                ``"faiss_ivf"``; None: the index's; more than the lists:
                every list is probed).

        Returns:
            ``SearchResult`` of ``[Nq, k]`` arrays, best first; exact search
            breaks ties by the earlier gallery item (``[0, k]`` for no query).

        Raises:
            ValueError: an empty index, k outside [1, len(index)], queries of
                another dimension or with non-finite values, probes not a
                positive integer or given to a backend without lists.
        """
        if not len(self):
            raise ValueError("The index is empty: add items before searching. Received: an index of 0 items")
        queries = _check_embeddings(embeddings, "embeddings", self.embedding_dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self):
            raise ValueError(f"`k` must be an integer between 1 and the index size {len(self)}. Received: k={k!r}")
        k, probes = int(k), list_options(self._backend_name, probes=probes)[1]
        if not len(queries):  # no query: empty results of the documented shapes
            indices, scores = np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
        elif self._backend_name == "exact":
            indices, scores = self._exact(queries, k)
        elif self.ivf is not None:  # IVF hook
            indices, scores = self.ivf.search(self.references, self.sq_norms, queries, k, probes, self.block_size)
        else:
            if self._backend is None:
                self._backend = ann.build(self._backend_name, self.references, self.metric, *self._list_options)
            indices, scores = ann.search(self._backend, queries, self.references, self.sq_norms, k, self.metric,
                                         probes)
        return SearchResult(self.ids[indices], scores, self.labels[indices], self.paths[indices], indices)

    def _exact(self, queries, k):
        if self._tensors is None:
            self._tensors = (tf.constant(self.references), tf.constant(self.sq_norms) if self.metric == "l2" else None)
        references, sq_norms = self._tensors
        chunk = chunk_size_for(len(self), min(self.block_size, len(queries)), k)
        parts = []
        for start in range(0, len(queries), self.block_size):
            block = tf.constant(queries[start : start + self.block_size])
            parts.append([t.numpy() for t in _exact_search(block, references, sq_norms, k, self.metric, chunk)])
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def save(self, path, overwrite=False, protected=()):
        """Deprecated: use ``rankloss_tf.retrieval.save_index(index, path)`` (same arguments and result)."""
        warnings.warn("Index.save is deprecated; use rankloss_tf.retrieval.save_index(index, path)",
                      DeprecationWarning, stacklevel=2)
        # Here, not at the top: the layer rules allow it (one package), but saved_model imports Index from this
        # module at its top, so a top-level import here would be circular (whichever module is imported first
        # would see the other half-initialised).
        from rankloss_tf.retrieval.saved_model import save_index

        return save_index(self, path, overwrite, protected)

    @classmethod
    def load(cls, path, backend=None, block_size=1024):
        """Deprecated: use ``rankloss_tf.retrieval.load_index(path)`` (same arguments and result)."""
        warnings.warn("Index.load is deprecated; use rankloss_tf.retrieval.load_index(path)",
                      DeprecationWarning, stacklevel=2)
        from rankloss_tf.retrieval.saved_model import load_index  # here, not at the top: see ``save``

        return load_index(path, backend, block_size)
