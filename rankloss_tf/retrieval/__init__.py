"""Retrieval you can ship: an ``Index`` of gallery embeddings and its one-SavedModel export.

``Index(model).add(images, labels, ids, paths)`` embeds a gallery;
``search(images, k)`` returns ids, scores and labels of the k nearest items
(exact: the evaluation kernel; or an optional approximate backend, ``ann``);
``save_index`` / ``load_index`` write and read it as a directory of
versioned SavedModels (one per save, the current one behind an atomically
replaced pointer) whose signatures ``search``, ``embed`` and
``search_embeddings`` serve it without this package. A SavedModel is a
program: load only indexes you trust. ``load_gallery`` reads a dataset, a ``folder:`` or arrays;
``build_index`` embeds one into an index.
"""

from rankloss_tf.lazy import lazy_attributes

# name -> module that defines it; imported when first used, so that the command line's
# argument definitions (``app.index_commands``) load without TensorFlow.
_HOMES = {
    "Gallery": "rankloss_tf.retrieval.gallery",
    "Index": "rankloss_tf.retrieval.index",
    "SearchResult": "rankloss_tf.retrieval.index",
    "build_index": "rankloss_tf.retrieval.build",
    "export_index": "rankloss_tf.retrieval.saved_model",
    "load_gallery": "rankloss_tf.retrieval.gallery",
    "load_index": "rankloss_tf.retrieval.saved_model",
    "save_index": "rankloss_tf.retrieval.saved_model",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES)
