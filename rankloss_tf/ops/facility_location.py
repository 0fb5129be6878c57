"""Clustering loss by facility location (Song, Jegelka, Rathod, Murphy, CVPR 2017), contrib's rules.

The loss-augmented inference picks one medoid per class greedily and, optionally,
refines them with PAM swaps. Every step scores all candidate medoids at once: the
assignment a candidate would produce is one [B, B] matrix, and the clustering quality
(NMI, ARI, ...) of every row comes from run lengths of sorted (class, cluster) ids.
Memory O(B^2) and time O(C B^2 log B) for C classes, in `tf.while_loop`s with static
shapes (no Python loop over candidates or clusters, no ``py_func``).
"""

import math

import tensorflow as tf

from rankloss_tf.ops.distances import pairwise_distances
from rankloss_tf.ops.checks import check_non_negative, standardize_inputs

MARGIN_TYPES = ("nmi", "vmeasure", "ari", "const")
PAM_ITERATIONS = 5


def check_margin_type(margin_type):
    """Returns ``margin_type`` if it is one of ``MARGIN_TYPES``, else raises ValueError."""
    if margin_type not in MARGIN_TYPES:
        raise ValueError(
            f"`margin_type` must be one of {MARGIN_TYPES} (contrib's 'ami' is not provided). "
            f"Received: margin_type={margin_type!r}"
        )
    return margin_type


def class_ids(labels):
    """Dense class ids 0..C-1 in order of label value, and C; no ``tf.unique`` (static shapes).

    Args:
        labels: class labels [B].

    Returns:
        ``(ids [B] int32, num_classes scalar int32)``.
    """
    size = tf.shape(labels)[0]
    order = tf.argsort(labels, stable=True)
    ordered = tf.gather(labels, order)
    starts = tf.logical_or(tf.range(size) == 0, tf.not_equal(ordered, tf.roll(ordered, 1, axis=0)))
    sorted_ids = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    ids = tf.scatter_nd(order[:, None], sorted_ids, [size])
    return ids, tf.reduce_sum(tf.cast(starts, tf.int32))


def _run_statistics(ids):
    """Per row of ids [M, B]: (sum of n log n, sum of n^2, number of distinct values), n the value counts.

    Each of the n positions of a value contributes log n, n and 1 / n: float64 [M] each.
    """
    rows, width = tf.shape(ids)[0], tf.shape(ids)[1]
    ordered = tf.sort(ids, axis=1)
    starts = tf.concat([tf.ones([rows, 1], tf.bool), tf.not_equal(ordered[:, 1:], ordered[:, :-1])], axis=1)
    runs = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1 + tf.range(rows)[:, None] * width
    counts = tf.math.unsorted_segment_sum(tf.ones(tf.shape(runs), tf.float64), runs, rows * width)
    per_position = tf.gather(counts, runs)
    return (
        tf.reduce_sum(tf.math.log(per_position), axis=1),
        tf.reduce_sum(per_position, axis=1),
        tf.reduce_sum(tf.cast(starts, tf.float64), axis=1),
    )


def clustering_scores(classes, assignments, margin_type="nmi"):
    """Agreement in [0, 1] of the true classes with each row of cluster assignments.

    As scikit-learn 1.x (contrib called it through ``py_func``), with N = B samples,
    contingency counts n_kc, class sizes a_k and cluster sizes b_c:
    - "nmi" (arithmetic normalisation) and "vmeasure" (beta = 1, the same number):
      MI / ((H(classes) + H(clusters)) / 2), 1 when both have a single group;
    - "ari": adjusted Rand index from the pair counts, clipped at 0 (as contrib);
    - "const": 1 if the class ids equal the cluster ids everywhere, else 0.

    Args:
        classes: class ids [B] int32 (0..C-1).
        assignments: cluster ids [M, B] int32, one clustering per row.
        margin_type: one of ``MARGIN_TYPES``.

    Returns:
        Float64 [M].
    """
    check_margin_type(margin_type)
    assignments = tf.cast(assignments, tf.int64)
    classes = tf.cast(classes, tf.int64)
    if margin_type == "const":
        return tf.cast(tf.reduce_all(tf.equal(assignments, classes[None, :]), axis=1), tf.float64)
    width = tf.cast(tf.shape(assignments)[1], tf.int64)
    cells_log, cells_squares, _ = _run_statistics(classes[None, :] * width + assignments)
    clusters_log, clusters_squares, num_clusters = _run_statistics(assignments)
    classes_log, classes_squares, num_classes = _run_statistics(classes[None, :])
    n, one = tf.cast(width, tf.float64), tf.ones([], tf.float64)
    if margin_type == "ari":
        true_pairs = cells_squares - n
        false_positives, false_negatives = clusters_squares - cells_squares, classes_squares - cells_squares
        true_negatives = n * n - false_positives - false_negatives - cells_squares
        numerator = 2.0 * (true_pairs * true_negatives - false_negatives * false_positives)
        denominator = (true_pairs + false_negatives) * (false_negatives + true_negatives) + (
            true_pairs + false_positives
        ) * (false_positives + true_negatives)
        perfect = tf.logical_and(tf.equal(false_positives, 0.0), tf.equal(false_negatives, 0.0))
        return tf.where(perfect, one, tf.maximum(tf.math.divide_no_nan(numerator, denominator), 0.0))
    mutual_information = (cells_log - classes_log - clusters_log) / n + tf.math.log(n)
    mutual_information = tf.where(mutual_information > 1e-12, mutual_information, tf.zeros_like(one))
    entropies = 2.0 * tf.math.log(n) - (classes_log + clusters_log) / n
    single = tf.logical_and(tf.equal(num_classes, 1.0), tf.equal(num_clusters, 1.0))
    return tf.where(single, one, tf.math.divide_no_nan(2.0 * mutual_information, entropies))


def _with_medoids_fixed(assignments, medoids, valid):
    """Assigns each valid medoid to its own cluster (contrib's ``get_cluster_assignment`` rule).

    ``assignments`` [M, B]; ``medoids`` [K] point indices, ``valid`` [K] which of them are in use.
    """
    size = tf.shape(assignments)[1]
    slots = tf.range(tf.shape(medoids)[0])
    own = tf.math.unsorted_segment_max(
        tf.where(valid, slots, -1), tf.where(valid, medoids, size), size + 1
    )[:size]
    return tf.where(own[None, :] >= 0, own[None, :], assignments)


def nearest_medoid(distances, medoids, num_medoids):
    """Cluster of every point: its nearest medoid among the first ``num_medoids`` (first on ties).

    Args:
        distances: float [B, B].
        medoids: int32 [B], point index of medoid k in slot k (slots >= ``num_medoids`` unused).
        num_medoids: int32 scalar.

    Returns:
        ``(assignment [B] int32, distance to that medoid [B])``.
    """
    valid = tf.range(tf.shape(medoids)[0]) < num_medoids
    rows = tf.gather(distances, tf.where(valid, medoids, 0))
    rows = tf.where(valid[:, None], rows, tf.constant(float("inf"), distances.dtype))
    assignment = tf.cast(tf.argmin(rows, axis=0), tf.int32)
    fixed = _with_medoids_fixed(assignment[None, :], medoids, valid)[0]
    return fixed, tf.reduce_min(rows, axis=0)


def _greedy_medoids(distances, classes, num_classes, margin_multiplier, margin_type):
    """Loss-augmented greedy facility location: C medoids, each maximising energy + margin term."""
    size = tf.shape(distances)[0]
    inf = tf.constant(float("inf"), distances.dtype)

    def step(k, medoids, nearest, assignment):
        # Candidate c takes the points strictly closer to it than to every chosen medoid.
        closer = distances < nearest[None, :]
        energies = -tf.reduce_sum(tf.minimum(distances, nearest[None, :]), axis=1)
        candidates = tf.where(closer, k, assignment[None, :])
        candidates = tf.where(tf.eye(size, dtype=tf.bool), k, candidates)
        candidates = _with_medoids_fixed(candidates, medoids, tf.range(size) < k)
        scores = tf.cast(energies, tf.float64) + margin_multiplier * (
            1.0 - clustering_scores(classes, candidates, margin_type)
        )
        in_use = tf.where(tf.range(size) < k, medoids, -1)
        chosen = tf.reduce_any(tf.equal(tf.range(size)[:, None], in_use[None, :]), axis=1)
        best = tf.cast(tf.argmax(tf.where(chosen, tf.constant(-math.inf, tf.float64), scores)), tf.int32)
        medoids = tf.tensor_scatter_nd_update(medoids, [[k]], [best])
        return k + 1, medoids, tf.minimum(nearest, distances[best]), candidates[best]

    initial = (0, tf.fill([size], -1), tf.fill([size], inf), tf.zeros([size], tf.int32))
    _, medoids, _, _ = tf.while_loop(lambda k, *_: k < num_classes, step, initial)
    return medoids


def _swap_scores(distances, classes, medoids, num_classes, slot, members, margin_multiplier, margin_type):
    """Score of every point as the new medoid of cluster ``slot`` (PAM), -inf for non-members."""
    size = tf.shape(distances)[0]
    slots = tf.range(size)
    others = tf.logical_and(slots < num_classes, tf.not_equal(slots, slot))
    inf = tf.constant(float("inf"), distances.dtype)
    rows = tf.where(others[:, None], tf.gather(distances, tf.where(others, medoids, 0)), inf)
    other_distance, other_slot = tf.reduce_min(rows, axis=0), tf.cast(tf.argmin(rows, axis=0), tf.int32)
    # Slot `slot` wins a point when strictly closer, or as close and earlier in the medoid order.
    wins = tf.logical_or(
        distances < other_distance[None, :],
        tf.logical_and(tf.equal(distances, other_distance[None, :]), slot < other_slot[None, :]),
    )
    candidates = tf.where(wins, slot, other_slot[None, :])
    candidates = tf.where(tf.eye(size, dtype=tf.bool), slot, candidates)
    candidates = _with_medoids_fixed(candidates, medoids, others)
    energies = -tf.reduce_sum(tf.where(members[None, :], distances, tf.zeros([], distances.dtype)), axis=1)
    scores = tf.cast(energies, tf.float64) + margin_multiplier * (
        1.0 - clustering_scores(classes, candidates, margin_type)
    )
    return tf.where(members, scores, tf.constant(-math.inf, tf.float64))


def _pam_medoids(distances, classes, num_classes, medoids, margin_multiplier, margin_type):
    """contrib's PAM refinement: ``PAM_ITERATIONS`` sweeps; each sweep re-assigns, then swaps medoid by medoid."""

    def sweep(iteration, medoids):
        predictions, _ = nearest_medoid(distances, medoids, num_classes)

        def swap(slot, medoids):
            members = tf.equal(predictions, slot)
            scores = _swap_scores(
                distances, classes, medoids, num_classes, slot, members, margin_multiplier, margin_type
            )
            best = tf.where(tf.reduce_any(members), tf.cast(tf.argmax(scores), tf.int32), medoids[slot])
            return slot + 1, tf.tensor_scatter_nd_update(medoids, [[slot]], [best])

        _, medoids = tf.while_loop(lambda slot, _: slot < num_classes, swap, (0, medoids))
        return iteration + 1, medoids

    _, medoids = tf.while_loop(lambda i, _: i < PAM_ITERATIONS, sweep, (0, medoids))
    return medoids


def ground_truth_energy(distances, classes, num_classes):
    """-sum over classes of min over q in the class of sum_{p in class} D[p, q] (each class's best medoid)."""
    same = tf.equal(classes[:, None], classes[None, :])
    column_sums = tf.reduce_sum(tf.where(same, distances, tf.zeros([], distances.dtype)), axis=0)
    size = tf.shape(distances)[0]
    per_class = tf.math.unsorted_segment_min(column_sums, classes, size)
    return -tf.reduce_sum(tf.where(tf.range(size) < num_classes, per_class, tf.zeros([], distances.dtype)))


def cluster_loss(labels, embeddings, margin_multiplier, enable_pam_finetuning=True, margin_type="nmi"):
    """Structured clustering loss by facility location (Song et al. 2017), contrib's definition.

    With D the L2 distances, F(S) = -sum_i min_{s in S} D[s, i] the facility energy of
    medoids S, and Q(y, S) the agreement (NMI by default) of the clustering by nearest
    medoid with the classes y:
        S* = greedy argmax over |S| = C of F(S) + margin_multiplier (1 - Q(y, S)),
             optionally refined by PAM swaps (``enable_pam_finetuning``),
        loss = max(F(S*) + margin_multiplier (1 - Q(y, S*)) - F_gt, 0),
    with F_gt = sum over classes of the class's best single-medoid energy. The medoid
    choice is not differentiated (as contrib); the gradient flows through F(S*) and F_gt.

    Reference: Song, Jegelka, Rathod, Murphy, "Deep Metric Learning via Facility
    Location", CVPR 2017.

    Args:
        labels: class labels [B] or [B, 1].
        embeddings: float [B, D] (contrib expected them L2-normalised).
        margin_multiplier: weight of the structured margin, >= 0.
        enable_pam_finetuning: refine the greedy medoids with PAM.
        margin_type: "nmi" (default), "vmeasure", "ari" or "const".

    Returns:
        Scalar loss (a structured loss of the whole batch, not a per-anchor vector),
        dtype of ``embeddings``.

    Example:
    >>> x = [[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]]
    >>> float(cluster_loss([0, 0, 1, 1], x, margin_multiplier=1.0))
    0.0
    """
    check_margin_type(margin_type)
    margin_multiplier = check_non_negative("margin_multiplier", margin_multiplier)
    dtype = tf.convert_to_tensor(embeddings).dtype
    labels, embeddings = standardize_inputs(labels, embeddings)
    distances = pairwise_distances(embeddings, "l2")
    classes, num_classes = class_ids(labels)
    frozen = tf.stop_gradient(distances)
    medoids = _greedy_medoids(frozen, classes, num_classes, margin_multiplier, margin_type)
    if enable_pam_finetuning:
        medoids = _pam_medoids(frozen, classes, num_classes, medoids, margin_multiplier, margin_type)
    medoids = tf.stop_gradient(medoids)
    predictions, nearest = nearest_medoid(distances, medoids, num_classes)
    quality = tf.cast(clustering_scores(classes, predictions[None, :], margin_type)[0], distances.dtype)
    energy = -tf.reduce_sum(nearest)
    loss = energy + margin_multiplier * (1.0 - quality) - ground_truth_energy(distances, classes, num_classes)
    return tf.cast(tf.maximum(loss, 0.0), dtype)
