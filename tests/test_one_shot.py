"""One-shot evaluation: a hand-made run archive, a NumPy oracle, the official runs."""

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.evaluation import OneShotRun, load_one_shot_runs, one_shot_accuracy
from rankloss_tf.evaluation.one_shot import shifted_views
from rankloss_tf.models import build_embedding_model
from tests.conftest import SHARED_DATA

ALL_RUNS = SHARED_DATA / "omniglot" / "all_runs.zip"


def _png(image):
    return tf.io.encode_png(image).numpy()


def _image(seed, size=12):
    return (np.random.default_rng(seed).random((size, size, 1)) > 0.5).astype(np.uint8) * 255


def _write_runs(path, ways=4, runs=2, shuffle=True):
    """Writes an archive in the official layout; returns {run: (support, queries, targets)}."""
    rng = np.random.default_rng(0)
    truth = {}
    with zipfile.ZipFile(path, "w") as archive:
        for r in range(1, runs + 1):
            name = f"run{r:02d}"
            support = [_image(100 * r + c) for c in range(ways)]
            targets = rng.permutation(ways) if shuffle else np.arange(ways)
            # A query is its class's image with a few pixels flipped: nearest is its class.
            queries = []
            for q, target in enumerate(targets):
                noisy = support[target].copy()
                noisy[q % 12, :3] = 255 - noisy[q % 12, :3]
                queries.append(noisy)
            lines = []
            for c in range(ways):
                archive.writestr(f"{name}/training/class{c + 1:02d}.png", _png(support[c]))
            for q, target in enumerate(targets):
                archive.writestr(f"{name}/test/item{q + 1:02d}.png", _png(queries[q]))
                lines.append(f"{name}/test/item{q + 1:02d}.png {name}/training/class{target + 1:02d}.png")
            archive.writestr(f"{name}/class_labels.txt", "\n".join(lines) + "\n")
            truth[name] = (np.stack(support), np.stack(queries), targets)
    return truth


def _flatten(images):
    return np.reshape(np.asarray(images, np.float32), (len(images), -1))


def _oracle(runs, embed, metric):
    """Brute-force loop: per query, the support item of least distance."""
    scores = []
    for run in runs:
        support, queries = embed(run.support), embed(run.queries)
        right = 0
        for query, target in zip(queries, run.targets):
            best, best_distance = None, np.inf
            for c, item in enumerate(support):
                if metric == "cosine":
                    distance = 1 - query @ item / (np.linalg.norm(query) * np.linalg.norm(item))
                else:
                    distance = np.sum((query - item) ** 2)
                if distance < best_distance:
                    best, best_distance = c, distance
            right += best == target
        scores.append(right / len(run.targets))
    return np.mean(scores)


def test_reads_the_archive_layout(tmp_path):
    truth = _write_runs(tmp_path / "runs.zip")
    runs = load_one_shot_runs(tmp_path / "runs.zip")
    assert [run.name for run in runs] == ["run01", "run02"]
    for run in runs:
        support, queries, targets = truth[run.name]
        np.testing.assert_array_equal(run.support, support)
        np.testing.assert_array_equal(run.queries, queries)
        np.testing.assert_array_equal(run.targets, targets)


def test_reads_an_extracted_folder(tmp_path):
    _write_runs(tmp_path / "runs.zip")
    with zipfile.ZipFile(tmp_path / "runs.zip") as archive:
        archive.extractall(tmp_path / "extracted")
    from_zip = load_one_shot_runs(tmp_path / "runs.zip")
    from_folder = load_one_shot_runs(tmp_path / "extracted")
    assert [r.name for r in from_folder] == [r.name for r in from_zip]
    for a, b in zip(from_zip, from_folder):
        np.testing.assert_array_equal(a.queries, b.queries)
        np.testing.assert_array_equal(a.targets, b.targets)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_pixel_embedding_matches_oracle_and_is_perfect_on_near_copies(tmp_path, metric):
    _write_runs(tmp_path / "runs.zip", ways=5, runs=3)
    result = one_shot_accuracy(_flatten, tmp_path / "runs.zip", metric=metric)
    assert result["accuracy"] == 1.0
    assert result["ways"] == 5 and result["queries"] == 15
    assert set(result["runs"]) == {"run01", "run02", "run03"}


def test_wrong_assignments_are_counted():
    # Queries swapped against their targets: a constant-free embedding gets exactly the swapped share wrong.
    eye = np.eye(4, dtype=np.uint8)[:, :, None, None] * 255
    run = OneShotRun("run01", support=eye, queries=eye, targets=np.array([0, 1, 3, 2]))
    result = one_shot_accuracy(_flatten, [run])
    assert result["accuracy"] == 0.5


def test_random_model_matches_oracle(tmp_path):
    _write_runs(tmp_path / "runs.zip", ways=6, runs=2)
    runs = load_one_shot_runs(tmp_path / "runs.zip")
    keras.utils.set_random_seed(1)
    model = build_embedding_model((8, 8, 1), embedding_dim=16)  # smaller input: images are resized
    result = one_shot_accuracy(model, runs, metric="l2")

    def embed(images):
        resized = tf.image.resize(images, (8, 8), antialias=True)
        return model.predict_on_batch(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8))

    assert result["accuracy"] == pytest.approx(_oracle(runs, embed, "l2"))


def test_grey_images_are_tiled_for_rgb_models(tmp_path):
    _write_runs(tmp_path / "runs.zip", ways=3, runs=1)
    seen = []

    class Embedder:
        image_shape = (6, 6, 3)

        def __call__(self, images):
            seen.append(images.shape)
            return _flatten(images)

    assert one_shot_accuracy(Embedder(), tmp_path / "runs.zip")["accuracy"] == 1.0
    assert seen == [(6, 6, 6, 3)]


@pytest.mark.parametrize(
    "members, message",
    [
        ({"readme.txt": b"nothing"}, "No run folder"),
        ({"run01/class_labels.txt": b"run01/test/item01.png run01/training/class01.png\n",
          "run01/test/item01.png": _png(_image(0))}, "absent"),
        ({"run01/class_labels.txt": b"run01/test/item01.png\n"}, "pairs"),
    ],
)
def test_bad_archives(tmp_path, members, message):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    with pytest.raises(ValueError, match=message):
        load_one_shot_runs(tmp_path / "bad.zip")


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="zip of one-shot runs"):
        load_one_shot_runs(tmp_path / "absent.zip")
    with pytest.raises(ValueError, match="empty"):
        one_shot_accuracy(_flatten, [])
    _write_runs(tmp_path / "runs.zip", ways=3, runs=1)
    with pytest.raises(ValueError, match="metric"):
        one_shot_accuracy(_flatten, tmp_path / "runs.zip", metric="dot")


@pytest.mark.skipif(not ALL_RUNS.is_file(), reason="official one-shot runs absent")
def test_official_runs():
    runs = load_one_shot_runs(ALL_RUNS)
    assert [run.name for run in runs] == [f"run{r:02d}" for r in range(1, 21)]
    for run in runs:
        assert run.support.shape == (20, 105, 105, 1) and run.queries.shape == (20, 105, 105, 1)
        assert sorted(run.targets.tolist()) == list(range(20))  # one test image per class
    result = one_shot_accuracy(_flatten, runs)
    assert result["ways"] == 20 and result["queries"] == 400
    assert result["accuracy"] == pytest.approx(_oracle(runs, _flatten, "cosine"))
    # Raw pixels are a weak but better-than-chance (1/20) classifier (Lake et al. 2015: pixel kNN ~ 0.2).
    assert 0.1 < result["accuracy"] < 0.35


def test_shifted_views_translate_with_edge_padding():
    image = np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5, 1)
    views = shifted_views(image, 2)
    assert len(views) == 9 and all(view.shape == image.shape for view in views)
    np.testing.assert_array_equal(views[0], image)  # the image itself first
    offsets = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if dy or dx]
    for (dy, dx), view in zip(offsets, views[1:]):
        rows = np.clip(np.arange(5) - dy, 0, 4)  # oracle: content moved (dy, dx), border = nearest edge pixel
        cols = np.clip(np.arange(5) - dx, 0, 4)
        np.testing.assert_array_equal(view[0, :, :, 0], image[0, :, :, 0][np.ix_(rows, cols)])
    assert len(shifted_views(image, 0)) == 1


@pytest.mark.parametrize("shift", [-1, 1.5, 5, True])
def test_bad_shift(shift):
    with pytest.raises(ValueError, match="shift"):
        shifted_views(np.zeros((1, 5, 5, 1), np.uint8), shift)


def test_shift_averages_the_views_embeddings():
    # Each image is a single bright pixel; embedding = its one-hot position. With shift 1, an image embeds as
    # the normalised mean of the one-hots of its 9 translates, which the oracle computes by hand.
    rng = np.random.default_rng(0)
    support = np.zeros((4, 7, 7, 1), np.uint8)
    for c, (y, x) in enumerate([(1, 1), (1, 5), (5, 1), (5, 5)]):
        support[c, y, x] = 255
    queries = np.roll(support, 1, axis=2)  # each query: its class's pixel one step right
    targets = rng.permutation(4)
    run = OneShotRun("run01", support=support, queries=queries[targets], targets=targets)

    def oracle(images):
        views = shifted_views(images, 1)
        mean = np.mean([_flatten(v) for v in views], axis=0)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    plain = one_shot_accuracy(_flatten, [run])["accuracy"]
    shifted = one_shot_accuracy(_flatten, [run], shift=1)["accuracy"]
    assert plain == 0.25  # disjoint pixels: every cosine is 0, the first support item wins (right once)
    assert shifted == pytest.approx(_oracle([run], oracle, "cosine")) and shifted == 1.0
