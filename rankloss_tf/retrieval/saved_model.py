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
prepared embeddings, squared norms, ids, labels, paths); the directory carries
the ``rankloss_tf_export.json`` marker (kind "index") and is written atomically
by ``export.write_export``.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf.evaluation.neighbours import chunk_size_for
from rankloss_tf.export import IMAGES_SPEC, SIGNATURE, read_export_info, write_export
from rankloss_tf.retrieval.embedder import Embedder
from rankloss_tf.retrieval import ivf_saved  # IVF hook
from rankloss_tf.retrieval.index import Index, exact_search

__all__ = ["export_index", "load_index"]

KIND = "index"
EXPORT_BLOCK_ROWS = 256  # request rows the reference chunk is sized for


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


def export_index(index, path, overwrite=False, protected=()):
    """Exports an ``Index`` as one SavedModel (see the module docstring for its signatures).

    Args:
        index: a non-empty ``Index``; without a model only
            ``search_embeddings`` is exported.
        path: target directory.
        overwrite: replace a previous export of this tool at ``path``.
        protected: paths the export must not be equal to, inside or above.

    Returns:
        ``Path`` of the export.

    Raises:
        ValueError: an empty index, or a path that may not be written
            (``export.check_export_path``).

    Example:
    >>> index = Index(metric="l2")
    >>> index.add_embeddings([[0.0], [1.0]], labels=[0, 1], ids=["a", "b"])
    >>> loaded = tf.saved_model.load(str(export_index(index, "/tmp/index")))  # doctest: +SKIP
    >>> loaded.search_embeddings(tf.constant([[0.9]]), tf.constant(1))["ids"].numpy()  # doctest: +SKIP
    array([[b'b']], dtype=object)
    """
    if not len(index):
        raise ValueError("Cannot export an empty index: add items first. Received: an index of 0 items")
    dim = index.embedding_dim
    ivf_parts = None if index.ivf is None else ivf_saved.export_parts(index)  # IVF hook
    gallery = ivf_parts.gallery if ivf_parts is not None else [
        tf.Variable(index.references, trainable=False, name="gallery_embeddings"),
        tf.Variable(index.sq_norms, trainable=False, name="gallery_sq_norms"),
        tf.Variable(index.ids.astype(str).tolist(), trainable=False, dtype=tf.string, name="gallery_ids"),
        tf.Variable(index.labels, trainable=False, name="gallery_labels"),
        tf.Variable(index.paths.astype(str).tolist(), trainable=False, dtype=tf.string, name="gallery_paths"),
    ]
    chunk = chunk_size_for(len(index), EXPORT_BLOCK_ROWS, 1)
    search_embeddings = _search_graph(gallery, index.metric, chunk, ivf_parts and ivf_parts.search)
    k_spec = tf.TensorSpec([], tf.int32, name="k")
    embedder = index.embedder

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
    return write_export(path, write, info, overwrite, protected)


def load_index(path, backend=None, block_size=1024):
    """Reads an index exported by ``export_index`` (``Index.save``).

    The loaded index embeds images with the export's ``embed`` signature and
    can be searched, grown, shrunk and saved again.

    Raises:
        ValueError: ``path`` is not an index export of this tool.

    Example:
    >>> index = load_index("/tmp/index")  # doctest: +SKIP
    >>> len(index)  # doctest: +SKIP
    2
    """
    info = read_export_info(path)
    if info is None or info.get("kind") != KIND:
        raise ValueError(
            f"Not an index exported by rankloss_tf (no rankloss_tf_export.json of kind {KIND!r}). "
            f"Received: path={path}"
        )
    loaded = tf.saved_model.load(str(Path(path)))
    references, sq_norms, ids, labels, paths = (v.numpy() for v in loaded.gallery)
    model = None
    if "embed" in loaded.signatures:
        signature = loaded.signatures["embed"]
        model = Embedder(lambda images: signature(images=images)["embeddings"], loaded, info["image_shape"])
    backend = info.get("backend", "exact") if backend is None else backend  # IVF hook: None = as saved
    index = Index(model, metric=info["metric"], backend=backend, block_size=block_size)
    index.references, index.sq_norms = references, sq_norms  # set directly: already prepared
    index.ids = np.array([i.decode() for i in ids], object)
    index.paths = np.array([p.decode() for p in paths], object)
    index.labels = labels.astype(np.int64)
    if info.get("backend") == "ivf":  # IVF hook: rows stored by list, and the lists
        ivf_saved.restore(index, loaded)
    return index
