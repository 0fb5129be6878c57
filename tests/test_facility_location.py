"""`rankloss_tf.ops.facility_location`: contrib's clustering loss, vectorised over candidates."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics

from rankloss_tf.ops import facility_location
from tests import oracles

SCORES = {
    "nmi": metrics.normalized_mutual_info_score,
    "vmeasure": metrics.v_measure_score,
    "ari": lambda y, a: max(metrics.adjusted_rand_score(y, a), 0.0),
}


def nearest(d, medoids):
    """Index of each point's nearest medoid (first on ties); every medoid in its own cluster."""
    assignment = np.argmin(d[medoids, :], axis=0)
    for slot, point in enumerate(medoids):
        assignment[point] = slot
    return assignment


def cluster_loss_oracle(labels, embeddings, margin_multiplier, pam=True, margin_type="nmi"):
    """The loss by brute force: every candidate medoid set scored one at a time with scikit-learn."""
    d = oracles.distance_matrix(np.float64(embeddings), "l2")
    score = SCORES[margin_type]
    labels = np.asarray(labels)

    def objective(medoids, energy_rows=None):
        energy = -np.sum(np.min(d[medoids, :], axis=0)) if energy_rows is None else energy_rows
        return energy + margin_multiplier * (1.0 - score(labels, nearest(d, medoids)))

    medoids = []
    for _ in range(len(np.unique(labels))):
        scores = {c: objective(medoids + [c]) for c in range(len(labels)) if c not in medoids}
        medoids.append(max(scores, key=lambda c: (scores[c], -c)))
    for _ in range(facility_location.PAM_ITERATIONS if pam else 0):
        clusters = nearest(d, medoids)
        for slot in range(len(medoids)):
            members = np.flatnonzero(clusters == slot)
            scores = {}
            for m in members:
                swapped = medoids[:slot] + [m] + medoids[slot + 1 :]
                scores[m] = objective(swapped, energy_rows=-np.sum(d[m, members]))
            medoids[slot] = max(scores, key=lambda m: (scores[m], -m))
    ground_truth = sum(-np.min(d[np.ix_(labels == c, labels == c)].sum(axis=0)) for c in np.unique(labels))
    return max(objective(medoids) - ground_truth, 0.0)


def blobs(seed, size, classes, dim=2):
    rng = np.random.RandomState(seed)
    centres = rng.normal(size=(classes, dim)) * 2.0
    labels = np.arange(size) % classes
    rng.shuffle(labels)
    embeddings = centres[labels] + rng.normal(size=(size, dim))
    return labels.astype(np.int32), ((embeddings - embeddings.mean(0)) / embeddings.std(0)).astype(np.float32)


CASES = [(0, 12, 3, 1.0), (1, 16, 4, 10.0), (2, 20, 6, 2.0), (3, 9, 9, 1.0), (4, 10, 1, 1.0)]


@pytest.mark.parametrize("pam", [False, True])
@pytest.mark.parametrize("seed,size,classes,multiplier", CASES)
def test_matches_brute_force_oracle(seed, size, classes, multiplier, pam):
    labels, embeddings = blobs(seed, size, classes)
    expected = cluster_loss_oracle(labels, embeddings, multiplier, pam)
    got = facility_location.cluster_loss(labels, embeddings, multiplier, enable_pam_finetuning=pam)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("margin_type", sorted(SCORES))
def test_other_margin_types_match_oracle(margin_type):
    labels, embeddings = blobs(5, 14, 4)
    expected = cluster_loss_oracle(labels, embeddings, 3.0, True, margin_type)
    got = facility_location.cluster_loss(labels, embeddings, 3.0, margin_type=margin_type)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("margin_type", ["nmi", "vmeasure", "ari", "const"])
def test_clustering_scores_equal_scikit_learn(margin_type):
    rng = np.random.RandomState(0)
    classes = rng.randint(0, 4, 15)
    assignments = np.stack([rng.randint(0, k, 15) for k in (1, 2, 4, 7, 15)] + [classes, np.zeros(15, int)])
    got = facility_location.clustering_scores(classes, assignments, margin_type).numpy()
    if margin_type == "const":
        expected = [float(np.all(row == classes)) for row in assignments]
    else:
        expected = [SCORES[margin_type](classes, row) for row in assignments]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # One class against one cluster is a perfect match (scikit-learn's convention).
    assert float(facility_location.clustering_scores(np.zeros(4, int), np.zeros((1, 4), int))[0]) == 1.0


def test_class_ids_are_dense_without_unique():
    ids, count = facility_location.class_ids(tf.constant([7, -3, 7, 2**24 + 1, 2**24]))
    assert ids.numpy().tolist() == [1, 0, 1, 3, 2] and int(count) == 4


def test_eager_function_and_xla_agree():
    labels, embeddings = blobs(6, 16, 5)
    eager = facility_location.cluster_loss(labels, embeddings, 2.0)
    for jit in (False, True):
        compiled = tf.function(lambda y, x: facility_location.cluster_loss(y, x, 2.0), jit_compile=jit)
        assert float(compiled(labels, embeddings)) == pytest.approx(float(eager), rel=1e-5, abs=1e-6)


def test_gradient_is_finite_and_flows_through_the_energies():
    labels, embeddings = blobs(7, 12, 3)
    embeddings[1] = embeddings[0]  # a zero distance
    x = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        loss = facility_location.cluster_loss(labels, x, 5.0)
    gradient = tape.gradient(loss, x).numpy()
    assert float(loss) > 0 and np.all(np.isfinite(gradient)) and np.any(gradient != 0)


def test_half_precision_returns_input_dtype():
    labels, embeddings = blobs(8, 10, 3)
    for dtype in (tf.float16, tf.bfloat16):
        loss = facility_location.cluster_loss(labels, tf.constant(embeddings, dtype), 1.0)
        assert loss.dtype == dtype


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"margin_type": "ami"}, "margin_type='ami'"),
        ({"margin_multiplier": -1.0}, "margin_multiplier=-1.0"),
    ],
)
def test_bad_options_raise(kwargs, match):
    arguments = {"margin_multiplier": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        facility_location.cluster_loss([0, 1], [[0.0], [1.0]], **arguments)
