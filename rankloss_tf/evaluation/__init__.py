"""Retrieval evaluation: blocked nearest neighbours, Recall@K, MAP@R, R-precision, NMI, F1, one-shot.

``evaluate(embeddings, labels)`` is the entry point (leave-one-out);
``query_gallery_metrics`` evaluates queries against a separate gallery or
``retrieval.Index``; ``one_shot_accuracy`` scores the official Omniglot 20-way
one-shot runs; ``RetrievalEvaluation`` runs ``evaluate`` on a held-out split
during ``fit``; ``plots`` draws the figures
(matplotlib extra).
"""

from rankloss_tf.evaluation.callback import RetrievalEvaluation
from rankloss_tf.evaluation.clustering import clustering_metrics, pairwise_f1
from rankloss_tf.evaluation.embedding import embed_dataset, thumbnails
from rankloss_tf.evaluation.metrics import KS, evaluate, format_table, ks_within
from rankloss_tf.evaluation.neighbours import nearest_neighbours
from rankloss_tf.evaluation.one_shot import OneShotRun, load_one_shot_runs, one_shot_accuracy
from rankloss_tf.evaluation.plots import plot_recall_at_k, plot_retrieval_gallery, plot_tsne
from rankloss_tf.evaluation.query_gallery import query_gallery_metrics
from rankloss_tf.evaluation.retrieval import retrieval_metrics

__all__ = [
    "KS",
    "OneShotRun",
    "RetrievalEvaluation",
    "clustering_metrics",
    "embed_dataset",
    "evaluate",
    "format_table",
    "ks_within",
    "load_one_shot_runs",
    "nearest_neighbours",
    "one_shot_accuracy",
    "pairwise_f1",
    "plot_recall_at_k",
    "plot_retrieval_gallery",
    "plot_tsne",
    "query_gallery_metrics",
    "retrieval_metrics",
    "thumbnails",
]
