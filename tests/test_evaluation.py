"""Evaluation: blocked kNN and metrics against brute-force NumPy and scikit-learn."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from rankloss_tf.evaluation import (
    RetrievalEvaluation,
    embed_dataset,
    evaluate,
    format_table,
    nearest_neighbours,
    pairwise_f1,
    plot_recall_at_k,
    plot_retrieval_gallery,
    plot_tsne,
)
from rankloss_tf.evaluation.clustering import cluster_scores
from rankloss_tf.evaluation.embedding import thumbnails
from tests import oracles


def brute_force_retrieval(embeddings, labels, ks, metric="cosine", max_r=1000):
    """Loop oracle: full distance matrix, argsort per query, PML definitions."""
    x = np.asarray(embeddings, np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        distances = -x @ x.T
    else:
        distances = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    recalls = {k: [] for k in ks}
    average_precisions, r_precisions = [], []
    for q in range(len(x)):
        order = [i for i in np.argsort(distances[q], kind="stable") if i != q]
        relevant = [labels[i] == labels[q] for i in order]
        r = min(sum(1 for i in range(len(x)) if i != q and labels[i] == labels[q]), max_r)
        if r == 0:
            continue
        for k in ks:
            recalls[k].append(any(relevant[:k]))
        hits, precision_sum = 0, 0.0
        for rank in range(1, r + 1):
            if relevant[rank - 1]:
                hits += 1
                precision_sum += hits / rank
        average_precisions.append(precision_sum / r)
        r_precisions.append(hits / r)
    result = {f"recall@{k}": float(np.mean(recalls[k])) for k in ks}
    result["map@r"] = float(np.mean(average_precisions))
    result["r_precision"] = float(np.mean(r_precisions))
    return result


def clustered_data(rng, num_classes, per_class, dim, noise):
    centres = rng.normal(size=(num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_retrieval_metrics_equal_brute_force(metric, block_size):
    rng = np.random.default_rng(0)
    embeddings, labels = clustered_data(rng, num_classes=6, per_class=9, dim=5, noise=1.0)
    # Uneven classes, a class of two and a lone sample (left out of the means).
    embeddings, labels = embeddings[:50], labels[:50].copy()
    labels[-3:-1] = 7
    labels[-1] = 9
    ks = (1, 2, 4, 8)
    got = evaluate(embeddings, labels, ks=ks, clustering=False, metric=metric, block_size=block_size)
    want = brute_force_retrieval(embeddings, labels, ks, metric)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_max_r_caps_r_like_the_oracle():
    rng = np.random.default_rng(1)
    embeddings, labels = clustered_data(rng, num_classes=3, per_class=12, dim=4, noise=2.0)
    got = evaluate(embeddings, labels, ks=(1,), clustering=False, max_r=5)
    want = brute_force_retrieval(embeddings, labels, (1,), max_r=5)
    assert got == pytest.approx(want, abs=1e-12)


def test_hand_worked_retrieval():
    # 1-D points; l2 neighbours of each: 0->1, 1->0 then 3 (wrong), 3->4, 4->3.
    x = np.array([[0.0], [1.0], [2.6], [3.0], [4.0]])
    labels = np.array([0, 0, 1, 1, 0])
    got = evaluate(x, labels, ks=(1, 2), clustering=False, metric="l2")
    # Query 0 (R=2): ranks 1 (hit), 2 (wrong, x=2.6) -> AP = 1/2, R-prec 1/2.
    # Query 1 (R=2): neighbours 0 (d=1, hit), 2 (d=1.6, wrong) -> AP 1/2.
    # Query 2 (R=1): neighbour 3 (hit) -> 1. Query 3 (R=1): 2 (hit) -> 1.
    # Query 4 (R=2): 3 (d=1, wrong), 2 (d=1.4, wrong) -> 0; recall@2 = 0.
    assert got["recall@1"] == pytest.approx(4 / 5)
    assert got["recall@2"] == pytest.approx(4 / 5)
    assert got["map@r"] == pytest.approx((0.5 + 0.5 + 1 + 1 + 0) / 5)
    assert got["r_precision"] == pytest.approx((0.5 + 0.5 + 1 + 1 + 0) / 5)


def test_nearest_neighbours_match_sorting_and_exclude_self():
    rng = np.random.default_rng(2)
    queries, references = rng.normal(size=(37, 8)), rng.normal(size=(53, 8))
    indices, distances = nearest_neighbours(queries, references, k=5, metric="l2", block_size=10)
    full = np.linalg.norm(queries[:, None] - references[None], axis=-1)
    oracles.assert_same_neighbours(indices, np.argsort(full, axis=1)[:, :5], full, atol=1e-4)  # float32 vs float64
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    # Leave-one-out with duplicate rows: the query itself is never returned, its twin is.
    twins = np.repeat(rng.normal(size=(10, 3)), 2, axis=0)
    indices, similarities = nearest_neighbours(twins, k=1, block_size=3)
    np.testing.assert_array_equal(indices[:, 0], np.arange(20) ^ 1)
    np.testing.assert_allclose(similarities[:, 0], 1.0, rtol=1e-5)


def test_nmi_equals_scikit_learn_and_kmeans():
    rng = np.random.default_rng(3)
    embeddings, labels = clustered_data(rng, num_classes=5, per_class=20, dim=16, noise=0.8)
    got = evaluate(embeddings, labels, ks=(1,), seed=4)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    clusters = KMeans(n_clusters=5, n_init="auto", random_state=4).fit_predict(unit.astype(np.float32))
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-12)
    assert got["f1"] == pytest.approx(pairwise_f1(labels, clusters), abs=1e-12)
    assert 0.5 < got["nmi"] <= 1.0


def test_pairwise_f1_hand_worked():
    # Classes {0,1,2}, {3,4}, {5}; clusters {0,1}, {2,3,4}, {5}.
    labels = [0, 0, 0, 1, 1, 2]
    clusters = [7, 7, 8, 8, 8, 9]
    # Same class pairs: (0,1) (0,2) (1,2) (3,4) = 4; same cluster: (0,1) (2,3) (2,4) (3,4) = 4.
    # TP = (0,1), (3,4) = 2 -> P = 2/4, R = 2/4, F1 = 0.5.
    assert pairwise_f1(labels, clusters) == pytest.approx(0.5)
    assert pairwise_f1([0, 0, 1], [5, 5, 6]) == 1.0
    # All in one cluster: P = 1/3 (one same-class pair of 3), R = 1 -> F1 = 0.5.
    assert pairwise_f1([0, 0, 1], [1, 1, 1]) == pytest.approx(0.5)
    assert cluster_scores(labels, clusters)["f1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(embeddings=np.zeros((4, 2, 1)), labels=[0, 0, 1, 1]), "embeddings"),
        (dict(embeddings=np.zeros((4, 2)), labels=[0, 0, 1]), "labels"),
        (dict(embeddings=np.zeros((4, 2)), labels=[0, 1, 2, 3]), "at least two samples"),
        (dict(embeddings=np.ones((4, 2)), labels=[0, 0, 1, 1], ks=(2, 1)), "ks"),
        (dict(embeddings=np.ones((4, 2)), labels=[0, 0, 1, 1], ks=(1, 8)), "k"),
        (dict(embeddings=np.ones((4, 2)), labels=[0, 0, 1, 1], metric="dot"), "metric"),
        (dict(embeddings=np.ones((4, 2)), labels=[0, 0, 1, 1], ks=(1,), block_size=0), "block_size"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(clustering=False, **kwargs)


def test_format_table():
    table = format_table({"recall@1": 0.91234, "nmi": 0.5})
    assert table.splitlines() == ["| metric | value |", "| --- | --- |", "| recall@1 | 0.9123 |", "| nmi | 0.5000 |"]


def tiny_dataset(num_classes=4, per_class=6):
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(num_classes), per_class)
    images = (rng.integers(0, 40, size=(len(labels), 8, 8, 1)) + 50 * labels[:, None, None, None]).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))), images, labels


def tiny_model():
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.Dense(4)(x)))


def test_embed_dataset_and_callback_logs_metrics():
    dataset, images, labels = tiny_dataset()
    model = tiny_model()
    embeddings, got_labels, thumbnails = embed_dataset(model, dataset, batch_size=5, thumbnail_size=4)
    np.testing.assert_allclose(embeddings, model(images).numpy(), atol=1e-6)
    np.testing.assert_array_equal(got_labels, labels)
    assert thumbnails.shape == (24, 4, 4, 1) and thumbnails.dtype == np.uint8

    model.compile(optimizer="sgd", loss="mse")
    callback = RetrievalEvaluation(dataset, ks=(1, 2), clustering=True, frequency=2)
    history = model.fit(images, np.zeros((24, 4)), epochs=4, verbose=0, callbacks=[callback])
    # Evaluated at epochs 2 and 4 only; logs of the other epochs have no val_ metrics.
    assert len(history.history["val_recall@1"]) == 2
    logs = {}
    callback.on_epoch_end(1, logs)
    want = evaluate(model(images).numpy(), labels, ks=(1, 2))
    assert logs == {f"val_{k}": pytest.approx(v) for k, v in want.items()}


def test_callback_metrics_reach_history():
    dataset, images, _ = tiny_dataset()
    model = tiny_model()
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(images, np.zeros((24, 4)), epochs=2, verbose=0,
                        callbacks=[RetrievalEvaluation(dataset, ks=(1,))])
    assert len(history.history["val_recall@1"]) == 2
    assert 0.0 <= history.history["val_map@r"][-1] <= 1.0


def test_plots_write_files(tmp_path):
    pytest.importorskip("matplotlib")
    _, images, labels = tiny_dataset()
    embeddings = tiny_model()(images).numpy()
    metrics = evaluate(embeddings, labels, ks=(1, 2, 4))
    paths = [
        plot_tsne(embeddings, labels, tmp_path / "tsne.png"),
        plot_recall_at_k(metrics, tmp_path / "recall.png"),
        plot_retrieval_gallery(images, labels, embeddings, tmp_path / "gallery.png", num_queries=3),
    ]
    for path in paths:
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="recall@K"):
        plot_recall_at_k({"nmi": 1.0}, tmp_path / "bad.png")
    json.dumps(metrics)


def test_thumbnails_of_chosen_positions_equal_those_of_all(tmp_path):
    dataset, images, labels = tiny_dataset()
    every = thumbnails(dataset, size=4, batch_size=5)
    chosen = thumbnails(dataset, size=4, batch_size=5, indices=[23, 0, 7, 7])
    np.testing.assert_array_equal(chosen, every[[23, 0, 7, 7]])
    with pytest.raises(ValueError, match="Received: \\[24\\]"):
        thumbnails(dataset, size=4, indices=[3, 24])


def test_the_gallery_plot_reads_only_the_images_it_shows(tmp_path):
    pytest.importorskip("matplotlib")
    _, images, labels = tiny_dataset()
    embeddings = tiny_model()(images).numpy()
    asked = []

    def read(positions):
        asked.append(np.asarray(positions))
        return np.asarray(images)[positions]

    plot_retrieval_gallery(read, labels, embeddings, tmp_path / "a.png", num_queries=3, k=2)
    plot_retrieval_gallery(images, labels, embeddings, tmp_path / "b.png", num_queries=3, k=2)
    assert len(asked) == 1 and asked[0].shape == (9,)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
