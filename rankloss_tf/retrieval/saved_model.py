"""An ``Index`` as one SavedModel: embedding network + gallery variables + search signatures.

Signatures (loadable with ``tf.saved_model.load``, TF Serving and
``keras.layers.TFSMLayer``, no Python of ours)::

    search(images: uint8 [N, h, w, c], k: int32 []) -> {ids: string [N, k], scores: float32 [N, k],
                                                         labels: int64 [N, k], paths: string [N, k],
                                                         indices: int32 [N, k]}
    embed(images: uint8 [N, h, w, c]) -> {embeddings: float32 [N, D]}     (also as serving_default)
    search_embeddings(embeddings: float32 [N, D], k: int32 []) -> as search

Images of any size with 1, 3 or 4 channels are conformed to the model's input
inside (``export.conform_images``). Scores are cosine similarities
(descending) or L2 distances (ascending), as the index's metric. The search is
exact: the evaluation kernel (matmul + top-k over reference chunks) in the
graph, so it answers what ``Index.search`` and ``evaluation.
nearest_neighbours`` answer. ``k`` outside [1, gallery size], non-finite
embeddings, a wrong rank or channel count fail with a clear
``InvalidArgumentError``.

The gallery is stored as variables (the variable collection ``gallery``:
prepared embeddings, squared norms, ids, labels, paths; ids and paths as the
UTF-8 bytes of the names, undecodable file-name bytes kept as they are).

An index directory holds numbered versions and a pointer to the current one
(``retrieval.versions``): ``save_index`` adds a version and moves the pointer
atomically, so a reader loading while another process saves gets the old or
the new index, never a mix. ``load_index(INDEX)`` reads the current version;
plain TensorFlow loads ``INDEX/<n>`` (the path ``save_index`` returns); TF
Serving takes ``--model_base_path=INDEX``.

Security: a SavedModel is a program. Loading an index (``load_index``,
``rankloss-tf search``, ``tf.saved_model.load``) runs the graph it holds,
which can read and write files. Load only indexes you (or someone you trust)
wrote.
"""

import logging
import warnings

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.evaluation.neighbours import chunk_size_for
from rankloss_tf.export import IMAGES_SPEC, MARKER, SIGNATURE, read_export_info
from rankloss_tf.retrieval.embedder import Embedder
from rankloss_tf.retrieval import ann, ivf_saved  # IVF hook
from rankloss_tf.retrieval.index import Index, exact_search
from rankloss_tf.retrieval.items import Items
from rankloss_tf.retrieval.versions import KIND, publish, read_current

__all__ = ["export_index", "load_index", "save_index"]

log = logging.getLogger(__name__)

EXPORT_BLOCK_ROWS = 256  # request rows the reference chunk is sized for


def _to_bytes(texts):
    """str -> UTF-8 bytes; a file name's undecodable bytes (surrogate escapes) come back as they were."""
    return [text.encode("utf-8", "surrogateescape") for text in texts.tolist()]


def _from_bytes(values):
    return np.array([value.decode("utf-8", "surrogateescape") for value in values.tolist()], object)


def _search_graph(gallery, metric, chunk, searcher=None):
    references, sq_norms, ids, labels, paths = gallery
    size = references.shape[0]

    def search_embeddings(embeddings, k, *options):
        valid_k = tf.logical_and(k >= 1, k <= size)
        checks = [
            tf.debugging.Assert(valid_k, ["`k` must be between 1 and the gallery size", size, "; received k =", k]),
            tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(embeddings)), ["the query embeddings are not finite"]),
        ]
        with tf.control_dependencies(checks):
            embeddings = tf.identity(embeddings)
        k = tf.where(valid_k, k, 1)
        if searcher is None:
            indices, scores = exact_search(embeddings, references, sq_norms if metric == "l2" else None, k, metric, chunk)
        else:  # IVF hook: searcher(embeddings, k, probes=None) of retrieval.ivf_saved
            indices, scores = searcher(embeddings, k, *options)
        return {
            "ids": tf.gather(ids, indices),
            "scores": scores,
            "labels": tf.gather(labels, indices),
            "paths": tf.gather(paths, indices),
            "indices": indices,
        }

    return search_embeddings


def _archive(gallery, search_embeddings, embedder, dim, ivf_parts=None):
    """The writer of one version: the gallery variables, the search graph and, with a model, its endpoints."""
    k_spec = tf.TensorSpec([], tf.int32, name="k")

    def write(directory):
        archive = keras.export.ExportArchive()
        archive.add_variable_collection("gallery", gallery)
        archive.add_endpoint(
            "search_embeddings", search_embeddings,
            input_signature=[tf.TensorSpec([None, dim], tf.float32, name="embeddings"), k_spec],
        )
        if embedder is not None:
            archive.track(embedder.trackable)

            def embed(images):
                return {"embeddings": tf.ensure_shape(embedder.embed_graph(images), [None, dim])}

            def search(images, k):
                return search_embeddings(embedder.embed_graph(images), k)

            archive.add_endpoint("embed", embed, input_signature=[IMAGES_SPEC])
            archive.add_endpoint(SIGNATURE, embed, input_signature=[IMAGES_SPEC])
            archive.add_endpoint("search", search, input_signature=[IMAGES_SPEC, k_spec])
        if ivf_parts is not None:  # IVF hook
            ivf_saved.add_probe_endpoints(archive, ivf_parts, search_embeddings,
                                          None if embedder is None else embedder.embed_graph, dim)
        archive.write_out(directory, verbose=False)

    return write


def save_index(index, path, overwrite=False, protected=(), build=None):
    """Saves an ``Index`` as a new version of the index directory ``path`` (see the module docstring).

    The marker records the metric, size and dimension; for ``backend="ivf"``
    the lists; for ``"faiss_ivf"`` (searched exactly by the SavedModel) its
    ``lists`` / ``probes`` options, which ``load_index`` gives back.

    Args:
        index: a non-empty ``Index``; without a model only
            ``search_embeddings`` is exported.
        path: the index directory.
        overwrite: replace the current version of an existing index of this
            tool (readers loading meanwhile get the old or the new one).
        protected: paths the index must not be equal to, inside or above.
        build: JSON-serialisable description of the build that wrote the
            index, recorded in the marker as ``"build"`` (``rankloss-tf index``
            records its build key there to recognise its own index); None:
            not recorded.

    Returns:
        ``Path`` of the new version, one SavedModel (``path/<n>``): what
        ``tf.saved_model.load`` takes. ``load_index``, ``rankloss-tf search``
        and TF Serving take ``path`` (always its current version).

    Raises:
        ValueError: an empty index, or a path that may not be written
            (``export.check_export_path``; one version of an index).

    Example:
    >>> index = Index(metric="l2")
    >>> index.add_embeddings([[0.0], [1.0]], labels=[0, 1], ids=["a", "b"])
    >>> loaded = tf.saved_model.load(str(save_index(index, "/tmp/index")))  # doctest: +SKIP
    >>> loaded.search_embeddings(tf.constant([[0.9]]), tf.constant(1))["ids"].numpy()  # doctest: +SKIP
    array([[b'b']], dtype=object)
    """
    if not len(index):
        raise ValueError("Cannot export an empty index: add items first. Received: an index of 0 items")
    dim = index.embedding_dim
    ivf_parts = None if index.ivf is None else ivf_saved.export_parts(index)  # IVF hook: rows sorted by list
    rows = ivf_parts.rows if ivf_parts is not None else [
        tf.Variable(index.references, trainable=False, name="gallery_embeddings"),
        tf.Variable(index.sq_norms, trainable=False, name="gallery_sq_norms"),
    ]
    gallery = [
        *rows,
        tf.Variable(_to_bytes(index.ids), trainable=False, dtype=tf.string, name="gallery_ids"),
        tf.Variable(index.labels, trainable=False, name="gallery_labels"),
        tf.Variable(_to_bytes(index.paths), trainable=False, dtype=tf.string, name="gallery_paths"),
    ]
    chunk = chunk_size_for(len(index), EXPORT_BLOCK_ROWS, 1)
    search_embeddings = _search_graph(gallery, index.metric, chunk, ivf_parts and ivf_parts.search)
    embedder = index.embedder
    info = {
        "kind": KIND,
        "metric": index.metric,
        "size": len(index),
        "embedding_dim": dim,
        "image_shape": None if embedder is None else list(embedder.image_shape),
        "signatures": {
            "search": "images uint8 [N, H, W, C], k int32 -> ids, scores, labels, paths, indices [N, k]",
            "embed": "images uint8 [N, H, W, C] -> embeddings float32 [N, D] (also serving_default)",
            "search_embeddings": "embeddings float32 [N, D], k int32 -> as search",
        },
    }
    if ivf_parts is not None:  # IVF hook
        info.update(ivf_parts.info)
    if index.backend == "faiss_ivf":  # a Python backend with options: load_index gives them back
        info.update(backend="faiss_ivf", faiss_ivf=dict(zip(("lists", "probes"), index.list_options)))
    if build is not None:
        info["build"] = build
    return publish(path, _archive(gallery, search_embeddings, embedder, dim, ivf_parts), info, overwrite, protected)


def export_index(index, path, overwrite=False, protected=()):
    """Deprecated name of ``save_index`` (same arguments and result).

    Example:
    >>> export_index(index, "/tmp/index")  # doctest: +SKIP
    PosixPath('/tmp/index/1')
    """
    warnings.warn("export_index is deprecated; use save_index", DeprecationWarning, stacklevel=2)
    return save_index(index, path, overwrite, protected)


def _read_version(directory, backend, block_size):
    """The ``Index`` of one version directory (a SavedModel with this tool's marker)."""
    info = read_export_info(directory)
    if info is None or info.get("kind") != KIND:
        raise ValueError(f"the version has no {MARKER} of kind {KIND!r}")
    loaded = tf.saved_model.load(str(directory))
    references, sq_norms, ids, labels, paths = (v.numpy() for v in loaded.gallery)
    saved_ivf = info.get("backend") == "ivf"
    backend, options = _loaded_backend(info, backend)
    if saved_ivf:  # IVF hook: the rows are stored sorted by list (int8 codes decoded unless searched as IVF)
        references, sq_norms = ivf_saved.gallery_order(loaded, references, sq_norms, keep_codes=backend == "ivf")
    items = Items.of(references, sq_norms, _from_bytes(ids), labels, _from_bytes(paths))
    model = None
    if "embed" in loaded.signatures:
        signature = loaded.signatures["embed"]
        model = Embedder(lambda images: signature(images=images)["embeddings"], loaded, info["image_shape"])
    index = Index(model, metric=info["metric"], backend=backend, block_size=block_size, items=items, **options)
    if saved_ivf and index.ivf is not None:  # IVF hook: the lists as saved
        ivf_saved.restore_lists(index.ivf, loaded)
    return index


def _loaded_backend(info, backend):
    """``(backend, options)`` of a loaded index: ``backend``, or as saved (None); saved faiss_ivf options kept.

    An index saved with ``"faiss_ivf"`` loaded where faiss is not installed
    is searched exactly (a warning says so), as its SavedModel searches.
    """
    saved = info.get("backend", "exact")
    if backend is None and saved == "faiss_ivf":
        try:
            ann.check_backend(saved)
        except ImportError as error:
            log.warning("%s; the index is searched exactly instead", error)
            return "exact", {}
    backend = saved if backend is None else backend
    if backend == saved == "faiss_ivf":
        options = {key: info.get("faiss_ivf", {}).get(key) for key in ("lists", "probes")}
        if options["lists"] and options["probes"] and options["probes"] > options["lists"]:
            options["probes"] = options["lists"]  # saved before more probes than lists were refused: they were clipped
        return backend, options
    return backend, {}


def load_index(path, backend=None, block_size=1024):
    """Reads the current version of an index written by ``save_index`` (or one version, ``INDEX/<n>``).

    The loaded index embeds images with the export's ``embed`` signature and
    can be searched, grown, shrunk and saved again. A save by another process
    while this one loads gives the old or the new index, never a mix.

    Security: an index is a SavedModel, a program: loading it runs its graph.
    Load only indexes you trust.

    Raises:
        ValueError: ``path`` is not an index of this tool, or its files are
            damaged or incomplete (one line naming the path).

    Example:
    >>> index = load_index("/tmp/index")  # doctest: +SKIP
    >>> len(index)  # doctest: +SKIP
    2
    """
    return read_current(path, lambda directory: _read_version(directory, backend, block_size))
