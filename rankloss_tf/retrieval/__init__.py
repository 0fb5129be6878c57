"""Retrieval you can ship: an ``Index`` of gallery embeddings and its one-SavedModel export.

``Index(model).add(images, labels, ids, paths)`` embeds a gallery;
``search(images, k)`` returns ids, scores and labels of the k nearest items
(exact: the evaluation kernel; or an optional approximate backend, ``ann``);
``save`` / ``Index.load`` write and read it as ONE SavedModel whose
signatures ``search``, ``embed`` and ``search_embeddings`` serve it without
this package. ``load_gallery`` reads a dataset, a ``folder:`` or arrays;
``build_index`` embeds one into an index.
"""

from rankloss_tf.retrieval.build import build_index
from rankloss_tf.retrieval.gallery import Gallery, load_gallery
from rankloss_tf.retrieval.index import Index, SearchResult
from rankloss_tf.retrieval.saved_model import export_index, load_index

__all__ = ["Gallery", "Index", "SearchResult", "build_index", "export_index", "load_gallery", "load_index"]
