"""The IVF backend in the index SavedModel: its variables, signatures and reading back.

An IVF export holds the usual ``gallery`` variable collection with the
prepared rows (and squared norms) *sorted by list* (ids, labels and paths in
gallery order), plus the collection ``ivf``: centroids, their squared norms,
list offsets, the gallery position of each sorted row, the default number of
lists probed, the training state (size, largest list / mean) and the code
scale and offset ``[D]`` (with ``codes="int8"`` the gallery rows are int8
codes, ``retrieval.ivf_codes``; else ones and zeros, unused). Its
``search`` / ``search_embeddings`` signatures run ``ivf_search`` with the
default probes; ``search_probes(images, k, probes)`` and
``search_embeddings_probes(embeddings, k, probes)`` take the number of lists
probed per call. Everything is standard TensorFlow: ``tf.saved_model.load``,
TF Serving or ``keras.layers.TFSMLayer`` serve it without this package.
"""

import collections

import numpy as np
import tensorflow as tf

from rankloss_tf.export import IMAGES_SPEC
from rankloss_tf.retrieval.ivf import gathered_variable
from rankloss_tf.retrieval.ivf_codes import Quantiser
from rankloss_tf.retrieval.ivf_search import ivf_search

__all__ = ["add_probe_endpoints", "export_parts", "gallery_order", "restore_lists", "saved_quantiser"]

IVFExport = collections.namedtuple("IVFExport", ["rows", "variables", "search", "info"])


def export_parts(index):
    """Variables, searcher and marker info of an ``Index`` with ``backend="ivf"`` (trained here if needed).

    Returns:
        ``IVFExport``: ``rows`` (the prepared rows and their squared norms,
        sorted by list: the first 2 variables of the ``gallery`` collection), ``variables`` (the ``ivf`` collection), ``search``
        (``search(embeddings, k, probes=None) -> (indices, values)``, graph
        code) and ``info`` (entries for the export marker).

    Example:
    >>> from rankloss_tf.retrieval.index import Index
    >>> index = Index(backend="ivf", lists=2)
    >>> index.add_embeddings(np.eye(4, dtype=np.float32), labels=[0, 0, 1, 1])
    >>> export_parts(index).info
    {'backend': 'ivf', 'ivf': {'lists': 2, 'probes': 2}}
    """
    ivf = index.ivf
    ivf.ensure(index.references, index.sq_norms)
    centroids, centroid_sq, rows, row_sq, offsets, positions, scale, shift = ivf.tables(
        index.references, index.sq_norms, sort_rows=False)
    gallery = [
        gathered_variable(rows, positions, "gallery_embeddings"),
        tf.Variable(row_sq, trainable=False, name="gallery_sq_norms"),
    ]
    variables = [
        tf.Variable(centroids, trainable=False, name="ivf_centroids"),
        tf.Variable(centroid_sq, trainable=False, name="ivf_centroid_sq_norms"),
        tf.Variable(offsets, trainable=False, name="ivf_offsets"),
        tf.Variable(positions, trainable=False, name="ivf_positions"),
        tf.Variable(ivf.probes, trainable=False, dtype=tf.int32, name="ivf_probes"),
        tf.Variable([ivf._trained_size, ivf._trained_peak], trainable=False, dtype=tf.float64, name="ivf_trained"),
        tf.Variable(scale, trainable=False, name="ivf_code_scale"),
        tf.Variable(shift, trainable=False, name="ivf_code_offset"),
    ]
    tables = [variables[0], variables[1], gallery[0], gallery[1], variables[2], variables[3], variables[6],
              variables[7]]

    def search(embeddings, k, probes=None):  # the default signatures scan the default probes' lists alone
        return ivf_search(embeddings, k, variables[4] if probes is None else probes, tables, index.metric, ivf.probes,
                          default_only=probes is None)

    info = {"backend": "ivf", "ivf": {"lists": len(centroids), "probes": ivf.probes}}
    if ivf.quantiser is not None:
        info["ivf"]["codes"] = "int8"
    return IVFExport(gallery, variables, search, info)


def add_probe_endpoints(archive, parts, search_embeddings, embed_graph, dim):
    """Adds the ``ivf`` collection and the ``*_probes`` signatures to a ``keras.export.ExportArchive``.

    Args:
        archive: the export archive of ``saved_model.export_index``.
        parts: this index's ``export_parts``.
        search_embeddings: the exported ``search_embeddings(embeddings, k, probes)`` graph function.
        embed_graph: ``images -> embeddings`` graph function, or None (no ``search_probes``).
        dim: the embedding dimension.

    Example:
    >>> add_probe_endpoints(archive, export_parts(index), search_embeddings, None, 128)  # doctest: +SKIP
    """
    archive.add_variable_collection("ivf", parts.variables)
    k_spec = tf.TensorSpec([], tf.int32, name="k")
    probes_spec = tf.TensorSpec([], tf.int32, name="probes")
    archive.add_endpoint(
        "search_embeddings_probes", search_embeddings,
        input_signature=[tf.TensorSpec([None, dim], tf.float32, name="embeddings"), k_spec, probes_spec],
    )
    if embed_graph is not None:

        def search_probes(images, k, probes):
            return search_embeddings(embed_graph(images), k, probes)

        archive.add_endpoint("search_probes", search_probes, input_signature=[IMAGES_SPEC, k_spec, probes_spec])


def gallery_order(loaded, references, sq_norms, keep_codes=True):
    """An IVF export's prepared rows and squared norms (stored sorted by list) back in gallery order.

    Args:
        loaded: the ``tf.saved_model.load`` object of an IVF export.
        references: float32 ``[N, D]`` rows (or int8 codes) as read from its ``gallery`` collection.
        sq_norms: float32 ``[N]`` their squared norms.
        keep_codes: int8 codes kept as they are (for an IVF index), else decoded to float32 rows.

    Returns:
        ``(references, sq_norms)`` in gallery order.

    Example:
    >>> gallery_order(tf.saved_model.load("/tmp/ivf_index"), rows, row_sq)  # doctest: +SKIP
    """
    positions = loaded.ivf[3].numpy()
    quantiser = saved_quantiser(loaded)
    if quantiser is not None and not keep_codes:
        references = quantiser.decode(references)
    ordered, ordered_sq = np.empty_like(references), np.empty_like(sq_norms)
    ordered[positions], ordered_sq[positions] = references, sq_norms
    return ordered, ordered_sq


def restore_lists(ivf, loaded):
    """Gives ``ivf`` (an ``Index``'s IVF backend) the lists, probes and training state of an IVF export.

    Example:
    >>> restore_lists(index.ivf, tf.saved_model.load("/tmp/ivf_index"))  # doctest: +SKIP
    """
    centroids, _, offsets, positions, probes, trained = (v.numpy() for v in loaded.ivf[:6])
    assignment = np.empty(len(positions), np.int32)
    assignment[positions] = np.repeat(np.arange(len(centroids), dtype=np.int32), np.diff(offsets))
    ivf.restore(centroids, assignment, probes, trained[0], trained[1], saved_quantiser(loaded))


def saved_quantiser(loaded):
    """The ``ivf_codes.Quantiser`` of an IVF export with int8 codes, else None (float rows, or an older export).

    Example:
    >>> saved_quantiser(tf.saved_model.load("/tmp/ivf_index"))  # doctest: +SKIP
    """
    if len(loaded.ivf) < 8 or loaded.gallery[0].dtype != tf.int8:
        return None
    return Quantiser(loaded.ivf[6].numpy(), loaded.ivf[7].numpy())
