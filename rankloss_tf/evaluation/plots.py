"""Plots of an evaluation: t-SNE map, Recall@K curve, retrieval gallery.

Needs matplotlib (the ``plots`` extra: ``pip install "rankloss-tf[plots]"``),
imported only when a plot is drawn. Figures are drawn with
``matplotlib.figure.Figure`` (no pyplot, no global figure state) and written
to the given path; each function returns that path.
"""

import importlib
import re
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE

from rankloss_tf.evaluation.neighbours import nearest_neighbours

__all__ = ["plot_recall_at_k", "plot_retrieval_gallery", "plot_tsne"]


def _figure(width, height):
    try:
        figure_module = importlib.import_module("matplotlib.figure")
    except ImportError as error:
        raise ImportError(
            'Plots need matplotlib: pip install "rankloss-tf[plots]".'
        ) from error
    return figure_module.Figure(figsize=(width, height), dpi=100)


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


def plot_tsne(embeddings, labels, path, max_points=1000, seed=0):
    """2-D t-SNE map of the embeddings, one colour per class.

    Args:
        embeddings: float ``[N, D]``.
        labels: ``[N]`` class labels.
        path: output image file (``.png``, ``.pdf``, ...).
        max_points: at most this many points (a seeded random subset) are
            embedded, t-SNE (Barnes-Hut, 500 iterations) being O(N log N)
            per iteration.
        seed: random state of the subset and of t-SNE.

    Returns:
        ``Path`` of the written figure.

    Example:
    >>> x = np.random.default_rng(0).normal(size=(60, 8))
    >>> plot_tsne(x, np.arange(60) % 3, "/tmp/tsne.png").name
    'tsne.png'
    """
    embeddings, labels = np.asarray(embeddings, np.float32), np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(labels))[:max_points])
    points = TSNE(
        n_components=2, init="pca", perplexity=min(30.0, (len(keep) - 1) / 3), max_iter=500, random_state=seed
    ).fit_transform(embeddings[keep])
    _, colours = np.unique(labels[keep], return_inverse=True)
    figure = _figure(7, 7)
    axes = figure.add_subplot()
    axes.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab20", s=6)
    axes.set_title(f"t-SNE of {len(keep)} test embeddings ({colours.max() + 1} classes)")
    axes.set_xticks([])
    axes.set_yticks([])
    return _save(figure, path)


def plot_recall_at_k(metrics, path):
    """Recall@K against K (log2 axis) from an ``evaluate`` result.

    Args:
        metrics: dict with ``"recall@K"`` entries.
        path: output image file.

    Returns:
        ``Path`` of the written figure.

    Example:
    >>> plot_recall_at_k({"recall@1": 0.6, "recall@2": 0.75, "map@r": 0.3}, "/tmp/recall.png").name
    'recall.png'
    """
    points = sorted(
        (int(match.group(1)), value)
        for name, value in metrics.items()
        if (match := re.fullmatch(r"recall@(\d+)", name))
    )
    if not points:
        raise ValueError(f"`metrics` holds no 'recall@K' entry. Received: keys={list(metrics)}")
    ks, values = zip(*points)
    figure = _figure(5, 4)
    axes = figure.add_subplot()
    axes.plot(ks, values, marker="o")
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.set_ylim(0, 1)
    axes.set_xlabel("K")
    axes.set_ylabel("Recall@K")
    axes.grid(True, alpha=0.3)
    return _save(figure, path)


def plot_retrieval_gallery(images, labels, embeddings, path, num_queries=8, k=5, metric="cosine", seed=0):
    """Queries with their top-k neighbours; correct neighbours framed green, wrong red.

    Args:
        images: ``uint8 [N, H, W, C]`` images (thumbnails are fine), or a function
            from positions to those images (``uint8 [len(positions), H, W, C]``),
            so that a large test set is not held in memory for the few shown.
        labels: ``[N]`` class labels.
        embeddings: float ``[N, D]``.
        path: output image file.
        num_queries: number of queries (a seeded random choice), one per row.
        k: neighbours shown per query.
        metric: ``"cosine"`` or ``"l2"``.
        seed: random state of the query choice.

    Returns:
        ``Path`` of the written figure.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(30, 8, 8, 1), dtype=np.uint8)
    >>> plot_retrieval_gallery(images, np.arange(30) % 3, rng.normal(size=(30, 4)), "/tmp/gallery.png").name
    'gallery.png'
    """
    images = images if callable(images) else np.asarray(images)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(labels), size=min(num_queries, len(labels)), replace=False)
    neighbours, _ = nearest_neighbours(np.asarray(embeddings)[queries], np.asarray(embeddings), k + 1, metric)
    rows = [[query, *[i for i in found if i != query][:k]] for query, found in zip(queries, neighbours)]
    shown = images(np.concatenate(rows)) if callable(images) else images[np.concatenate(rows)]
    starts = np.cumsum([0] + [len(items) for items in rows])
    figure = _figure(1.3 * (k + 1), 1.3 * len(queries))
    for row, items in enumerate(rows):
        query = items[0]
        for column, index in enumerate(items):
            axes = figure.add_subplot(len(queries), k + 1, row * (k + 1) + column + 1)
            image = shown[starts[row] + column]
            axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_title("query", fontsize=8)
                continue
            colour = "green" if labels[index] == labels[query] else "red"
            for spine in axes.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    return _save(figure, path)
