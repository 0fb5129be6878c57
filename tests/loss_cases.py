"""Shared cases of the loss tests: golden batch, (kernel, oracle, options) cases, random batches, Keras classes."""

import numpy as np
import tensorflow as tf

from rankloss_tf import losses, ops
from tests import oracles

GOLDEN_E = np.array(
    [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0.6, 0, 0.8], [-0.6, -0.8, 0]], np.float32
)
GOLDEN_Y = np.array([0, 0, 1, 1, 2, 2])
DISTANCES = ("l2", "squared_l2", "cosine")

# (kernel, oracle, kwargs) for every loss and option.
CASES = [
    (ops.triplet_semihard_loss, oracles.triplet_semihard, {"margin": m, "distance": d})
    for m in (1.0, 0.2)
    for d in DISTANCES
]
CASES += [
    (ops.triplet_hard_loss, oracles.triplet_hard, {"margin": 1.0, "soft": s, "distance": d})
    for s in (False, True)
    for d in DISTANCES
]
CASES += [(ops.contrastive_loss, oracles.contrastive, {"margin": m, "distance": d}) for m in (1.0, 0.5) for d in DISTANCES]
CASES += [
    (ops.npair_loss, oracles.npair, {"variant": v, "l2_reg": r}) for v in ("mc", "ovo") for r in (0.0, 0.002)
]
CASES += [(ops.angular_loss, oracles.angular, {"alpha": a}) for a in (36.0, 45.0, 55.0, 75.0)]
CASES += [(ops.npair_angular_loss, oracles.npair_angular, {"alpha": a, "lam": lam}) for a in (36.0, 45.0) for lam in (0.5, 2.0)]
CASE_IDS = [f"{k.__name__}-{'-'.join(str(v) for v in kw.values())}" for k, _, kw in CASES]

KERAS_CLASSES = [
    (losses.ContrastiveLoss, ops.contrastive_loss, {"margin": 0.7, "distance": "cosine"}),
    (losses.TripletSemiHardLoss, ops.triplet_semihard_loss, {"margin": 0.3, "distance": "squared_l2"}),
    (losses.TripletHardLoss, ops.triplet_hard_loss, {"margin": 0.4, "soft": True, "distance": "l2"}),
    (losses.NPairLoss, ops.npair_loss, {"variant": "ovo", "l2_reg": 0.01}),
    (losses.AngularLoss, ops.angular_loss, {"alpha": 40.0}),
    (losses.NPairAngularLoss, ops.npair_angular_loss, {"alpha": 50.0, "lam": 1.5}),
]


def random_batch(seed, batch_size=24, dim=5, num_classes=None, pk=None):
    """Random embeddings with labels: either PK (P classes x K samples, shuffled) or free draws."""
    rng = np.random.RandomState(seed)
    if pk is not None:
        p, k = pk
        labels = rng.permutation(np.repeat(rng.choice(1000, p, replace=False), k))
    else:
        labels = rng.randint(0, num_classes, size=batch_size)
    embeddings = rng.normal(size=(len(labels), dim)).astype(np.float32)
    return labels.astype(np.int32), embeddings


BATCHES = [
    random_batch(0, pk=(6, 2)),  # N-pair layout
    random_batch(1, pk=(4, 5)),  # K > 2 (odd)
    random_batch(2, batch_size=20, num_classes=9),  # classes of size 1 and several
    random_batch(3, batch_size=16, num_classes=4),
    random_batch(4, batch_size=7, num_classes=20),  # mostly singletons
]


def mean(kernel, labels, embeddings, **kwargs):
    return float(tf.reduce_mean(kernel(labels, embeddings, **kwargs)))


ALL_KERNELS = [k for k, _, _ in CASES[::4]] + [ops.angular_loss, ops.npair_angular_loss]
