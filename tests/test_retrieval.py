"""retrieval.Index and its one-SavedModel export: exact neighbours everywhere, add/remove/save/load, errors."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.evaluation import nearest_neighbours
from rankloss_tf.export import MARKER, SavedModelEmbedder
from rankloss_tf.models import build_embedding_model
from rankloss_tf.retrieval import Index, build_index, load_gallery, load_index, save_index

SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_embedding_model(SHAPE, embedding_dim=8, normalize=False)


def images(n, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def gallery_of(n=60, seed=1):
    return images(n, seed), np.arange(n) % 7, [f"item-{i}" for i in range(n)], [f"/data/{i}.png" for i in range(n)]


def score_matrix(queries, gallery, metric):
    """Oracle scores ``[Nq, Ng]`` in float64: cosine similarities or L2 distances."""
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if metric == "cosine":
        return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    return np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))


def assert_same_neighbours(got, want, scores, rtol=1e-5, atol=1e-4):
    """Neighbours ``[Nq, k]`` equal up to swaps within a tolerance of the oracle ``scores`` (near-ties).

    Two code paths computing the same floats (batch sizes, graph or eager, the
    CPU's oneDNN kernels: AVX2 vs AVX-512) may order a near-tie differently;
    every rank must hold an item whose oracle score matches the other's there.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    rows = np.arange(len(got))[:, None]
    np.testing.assert_allclose(scores[rows, got], scores[rows, want], rtol=rtol, atol=atol)
    assert all(len(set(row)) == len(row) for row in got.tolist())


def positions(ids, of):
    """Gallery positions of the ids ``of`` (any shape)."""
    where = {str(item): i for i, item in enumerate(ids)}
    return np.vectorize(lambda item: where[str(item)])(np.asarray(of, object))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_index_search_equals_nearest_neighbours(model, metric):
    gallery, labels, ids, paths = gallery_of()
    index = Index(model, metric=metric, block_size=4)
    index.add(gallery, labels, ids, paths)
    queries = images(9, seed=2)
    result = index.search(queries, k=6)
    embedded_queries, embedded_gallery = model(queries).numpy(), model(gallery).numpy()
    want_indices, want_values = nearest_neighbours(embedded_queries, embedded_gallery, k=6, metric=metric)
    # The index embeds in batches, the oracle at once: near-ties may swap (AVX-512 vs AVX2 kernels).
    assert_same_neighbours(result.indices, want_indices, score_matrix(embedded_queries, embedded_gallery, metric))
    np.testing.assert_array_equal(result.ids, np.array(ids, object)[result.indices])
    np.testing.assert_array_equal(result.labels, labels[result.indices])
    np.testing.assert_array_equal(result.paths, np.array(paths, object)[result.indices])
    np.testing.assert_allclose(result.scores, want_values, rtol=1e-5, atol=1e-5)


def test_loop_oracle_on_embeddings():
    rng = np.random.default_rng(4)
    gallery, queries = rng.normal(size=(25, 3)), rng.normal(size=(4, 3))
    index = Index(metric="l2")
    index.add_embeddings(gallery, labels=np.zeros(25, int))
    result = index.search_embeddings(queries, k=3)
    for q, row, scores in zip(queries, result.indices, result.scores):
        distances = [np.linalg.norm(q - g) for g in gallery]
        assert row.tolist() == sorted(range(25), key=lambda j: (distances[j], j))[:3]
        np.testing.assert_allclose(scores, np.sort(distances)[:3], rtol=1e-5)


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, keras
    path, out = sys.argv[1], sys.argv[2]
    queries = np.load(out + ".queries.npy")
    loaded = tf.saved_model.load(path)
    found = loaded.signatures["search"](images=tf.constant(queries), k=tf.constant(6))
    embedded = loaded.signatures["embed"](images=tf.constant(queries))["embeddings"]
    again = loaded.signatures["search_embeddings"](embeddings=embedded, k=tf.constant(6))
    layer = keras.layers.TFSMLayer(path, call_endpoint="search")(tf.constant(queries), k=tf.constant(6))
    np.savez(out, ids=found["ids"].numpy().astype(str), scores=found["scores"].numpy(),
             labels=found["labels"].numpy(), paths=found["paths"].numpy().astype(str),
             again=again["ids"].numpy().astype(str), layer=np.asarray(layer["ids"]).astype(str),
             embeddings=embedded.numpy())
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("rankloss_tf"))))
""")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exported_search_in_a_fresh_process_equals_python(model, metric, tmp_path):
    gallery, labels, ids, paths = gallery_of()
    index = Index(model, metric=metric)
    index.add(gallery, labels, ids, paths)
    path = save_index(index, tmp_path / "index")
    queries = images(9, seed=3)
    np.save(tmp_path / "out.queries.npy", queries)
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # no Python of ours
    got = np.load(tmp_path / "out.npz")
    result = index.search(queries, k=6)
    embedded_queries, embedded_gallery = model(queries).numpy(), model(gallery).numpy()
    want_indices, want_values = nearest_neighbours(embedded_queries, embedded_gallery, k=6, metric=metric)
    scores = score_matrix(embedded_queries, embedded_gallery, metric)
    served = positions(ids, got["ids"])  # graph, Python and oracle paths: equal up to near-ties
    for other in (want_indices, result.indices, positions(ids, got["again"])):
        assert_same_neighbours(served, other, scores)
    np.testing.assert_array_equal(got["layer"], got["ids"])  # the same signature
    np.testing.assert_array_equal(got["labels"], labels[served])
    np.testing.assert_array_equal(got["paths"], np.array(paths)[served])
    np.testing.assert_allclose(got["scores"], want_values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["embeddings"], model(queries).numpy(), rtol=1e-5, atol=1e-6)


def test_add_remove_save_load_equals_an_index_of_the_final_gallery(model, tmp_path):
    gallery, labels, ids, paths = gallery_of(40)
    grown = Index(model, metric="l2")
    grown.add(gallery[:25], labels[:25], ids[:25], paths[:25])
    grown.remove(["item-3", "item-10"])
    grown.add(gallery[25:], labels[25:], ids[25:], paths[25:])
    grown.remove(["item-30"])
    loaded = load_index(save_index(grown, tmp_path / "grown"))
    keep = [i for i in range(40) if i not in (3, 10, 30)]
    fresh = Index(model, metric="l2")
    fresh.add(gallery[keep], labels[keep], np.array(ids)[keep], np.array(paths)[keep])
    for name in ("ids", "labels", "paths"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fresh, name), err_msg=name)
    for name in ("references", "sq_norms"):  # embedded in other batch sizes: equal up to rounding
        np.testing.assert_allclose(getattr(loaded, name), getattr(fresh, name), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(loaded.references, grown.references)  # saving and loading is exact
    queries = images(8, seed=5)
    want = fresh.search(queries, k=5)
    scores = score_matrix(model(queries).numpy(), fresh.references, "l2")
    for index in (grown, loaded):
        got = index.search(queries, k=5)
        assert_same_neighbours(positions(fresh.ids, got.ids), want.indices, scores)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
    # The loaded index grows again and re-exports.
    loaded.add(images(2, seed=9), [0, 1], ["new-a", "new-b"])
    again = tf.saved_model.load(str(save_index(loaded, tmp_path / "again")))
    ids_out = again.signatures["search"](images=tf.constant(queries), k=tf.constant(5))["ids"].numpy().astype(str)
    scores = score_matrix(model(queries).numpy(), loaded.references, "l2")
    assert_same_neighbours(positions(loaded.ids, ids_out), loaded.search(queries, k=5).indices, scores)


def test_export_is_marked_and_serves_any_image_size(model, tmp_path):
    index = Index(model)
    index.add(*gallery_of(10)[:3])
    path = save_index(index, tmp_path / "index")
    info = json.loads((path / MARKER).read_text())
    assert (info["kind"], info["metric"], info["size"], info["image_shape"]) == ("index", "cosine", 10, [12, 12, 1])
    loaded = tf.saved_model.load(str(path))
    rgb = images(2, seed=6, shape=(30, 20, 3))
    found = loaded.signatures["search"](images=tf.constant(rgb), k=tf.constant(3))
    assert found["ids"].shape == (2, 3)
    scores = score_matrix(index.embed(rgb), index.references, "cosine")
    assert_same_neighbours(positions(index.ids, found["ids"].numpy().astype(str)), index.search(rgb, k=3).indices, scores)
    assert SavedModelEmbedder(path)(rgb).shape == (2, 8)  # serving_default = embed


@pytest.mark.parametrize("backend", ["exact", "ivf"])
def test_exported_search_of_no_queries_answers_empty_results(model, tmp_path, backend):
    index = Index(model, backend=backend, **({"lists": 3} if backend == "ivf" else {}))
    index.add(*gallery_of(30)[:3])
    loaded = tf.saved_model.load(str(save_index(index, tmp_path / "index")))
    inputs = {"images": tf.zeros([0, *SHAPE], tf.uint8), "embeddings": tf.zeros([0, 8])}
    names = [name for name in loaded.signatures if name.startswith("search")]
    assert len(names) == (4 if backend == "ivf" else 2)
    for name in names:
        signature = loaded.signatures[name]
        arguments = {key: inputs[key] for key in ("images", "embeddings") if key in signature.structured_input_signature[1]}
        arguments.update(k=tf.constant(5), **({"probes": tf.constant(2)} if "probes" in name else {}))
        found = signature(**arguments)
        assert {key: tuple(value.shape) for key, value in found.items()} == dict.fromkeys(
            ("ids", "scores", "labels", "paths", "indices"), (0, 5)), name
    assert index.search(images(0), k=5).ids.shape == (0, 5)


def test_exported_search_errors_are_clear(model, tmp_path):
    index = Index(model)
    index.add(*gallery_of(10)[:3])
    loaded = tf.saved_model.load(str(save_index(index, tmp_path / "index")))
    for k in (0, 11):
        with pytest.raises(tf.errors.InvalidArgumentError, match="`k` must be between 1 and the gallery size"):
            loaded.signatures["search"](images=tf.constant(images(1)), k=tf.constant(k))
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank 4"):
        loaded.signatures["search"](images=tf.constant(images(1)[0]), k=tf.constant(1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not finite"):
        loaded.signatures["search_embeddings"](embeddings=tf.fill([1, 8], np.nan), k=tf.constant(1))


def test_python_errors_are_clear(model, tmp_path):
    index = Index(model)
    with pytest.raises(ValueError, match="index is empty"):
        index.search(images(1), k=1)
    with pytest.raises(ValueError, match="empty index"):
        save_index(index, tmp_path / "empty")
    index.add(images(3), [0, 1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"duplicate ids \['a'\]"):
        index.add(images(1), [0], ["a"])
    with pytest.raises(ValueError, match=r"duplicate ids \['d'\]"):
        index.add(images(2), [0, 1], ["d", "d"])
    with pytest.raises(ValueError, match="between 1 and the index size 3. Received: k=4"):
        index.search(images(1), k=4)
    with pytest.raises(ValueError, match="uint8.*Received: dtype=float32"):
        index.search(images(1).astype(np.float32) / 255, k=1)
    with pytest.raises(ValueError, match=r"Received: shape=\(12, 12, 1\)"):
        index.search(images(1)[0], k=1)
    with pytest.raises(ValueError, match=r"\[N, 8\] array. Received: shape=\(1, 5\)"):
        index.search_embeddings(np.zeros((1, 5)), k=1)
    with pytest.raises(ValueError, match="finite"):
        index.add_embeddings(np.full((1, 8), np.inf), [0], ["e"])
    with pytest.raises(ValueError, match="not in the index"):
        index.remove(["zzz"])
    with pytest.raises(ValueError, match="`metric`"):
        Index(metric="dot")
    with pytest.raises(ValueError, match="`backend`"):
        Index(backend="nmslib")
    assert len(index) == 3 and index.ids.tolist() == ["a", "b", "c"]
    (tmp_path / "mine").mkdir()
    with pytest.raises(ValueError, match="not an export of rankloss_tf"):
        save_index(index, tmp_path / "mine", overwrite=True)
    with pytest.raises(ValueError, match="Not an index"):
        load_index(tmp_path / "mine")


@pytest.mark.parametrize("backend", ["faiss", "usearch", "faiss_ivf"])
def test_ann_backends_behind_the_same_interface(backend):
    pytest.importorskip({"usearch": "usearch.index", "faiss_ivf": "faiss"}.get(backend, backend))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    gallery = centres[np.arange(2000) % 20] + 0.3 * rng.normal(size=(2000, 16))
    queries = centres[:10] + 0.3 * rng.normal(size=(10, 16))
    exact, approximate = Index(), Index(backend=backend)
    for index in (exact, approximate):
        index.add_embeddings(gallery, np.arange(2000) % 20)
    want, got = exact.search_embeddings(queries, 10), approximate.search_embeddings(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want.ids, got.ids)])
    assert recall >= 0.9
    assert np.all(np.diff(got.scores, axis=1) <= 0)
    assert (got.labels[:, 0] == np.arange(10)).all()


def test_folder_gallery_indexes_every_image_with_paths(model, tmp_path):
    root = tmp_path / "photos"
    for name, shape in (("chats é", (12, 12, 1)), ("dogs", (20, 16, 3))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            data = tf.io.encode_png(images(1, seed=i + len(name), shape=shape)[0]).numpy()
            (root / name / f"{i}.png").write_bytes(data)
    gallery = load_gallery(f"folder:{root}")
    assert gallery.ids.tolist() == [f"chats é/{i}.png" for i in range(3)] + [f"dogs/{i}.png" for i in range(3)]
    index = build_index(model, gallery, batch_size=4)
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1] and index.paths[4] == str(root / "dogs" / "1.png")
    query = tf.io.decode_png(tf.io.read_file(str(root / "dogs" / "1.png")))[tf.newaxis]
    assert index.search(query, k=1).ids[0, 0] == "dogs/1.png"


def test_dataset_gallery_and_progress(model):
    steps = []
    gallery = load_gallery("digits", split="test")
    digits_model = build_embedding_model((8, 8, 1), embedding_dim=4)
    index = build_index(digits_model, gallery, batch_size=300, on_batch=lambda s, t: steps.append((s, t)))
    assert len(index) == 896 and index.ids[5] == "digits/test/000005"
    assert steps == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="one label per image"):
        load_gallery(images(3), labels=[0])


def test_query_gallery_metrics_loop_oracle_and_index_gallery():
    from rankloss_tf.evaluation import query_gallery_metrics

    rng = np.random.default_rng(7)
    gallery, gallery_labels = rng.normal(size=(40, 4)), rng.integers(0, 5, 40)
    queries, query_labels = rng.normal(size=(12, 4)), rng.integers(0, 6, 12)  # class 5: not in the gallery
    got = query_gallery_metrics(queries, query_labels, gallery, gallery_labels, ks=(1, 3), metric="l2")
    hits, average_precisions = {1: [], 3: []}, []
    for q, label in zip(queries, query_labels):
        r = int(np.sum(gallery_labels == label))
        if r == 0:
            continue
        order = sorted(range(40), key=lambda j: (np.linalg.norm(q - gallery[j]), j))
        rel = [gallery_labels[j] == label for j in order]
        for top in hits:
            hits[top].append(any(rel[:top]))
        average_precisions.append(sum(rel[i] * sum(rel[: i + 1]) / (i + 1) for i in range(r)) / r)
    want = {"recall@1": np.mean(hits[1]), "recall@3": np.mean(hits[3]), "map@r": np.mean(average_precisions)}
    assert got == pytest.approx(want)
    index = Index(metric="l2")
    index.add_embeddings(gallery, gallery_labels)
    assert query_gallery_metrics(queries, query_labels, index, ks=(1, 3)) == pytest.approx(want)
    with pytest.raises(ValueError, match="No query class is in the gallery"):
        query_gallery_metrics(queries[:2], [9, 9], gallery, gallery_labels)
