"""Contrastive loss: a hand-worked batch and the fused row sums' two forms."""

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import ops
from tests.loss_cases import DISTANCES, random_batch


def test_hand_worked_contrastive():
    # Pairs: (0,1) positive at distance 0.5 -> 0.25; (0,2) and (1,2) negatives at
    # distances 1 and 0.5 with margin 1 -> 0 and 0.25. Per anchor: [0.125, 0.25, 0.125].
    labels = [0, 0, 1]
    embeddings = [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    got = ops.contrastive_loss(labels, embeddings).numpy()
    np.testing.assert_allclose(got, [0.125, 0.25, 0.125], atol=1e-7)


@pytest.mark.parametrize("distance", DISTANCES)
def test_contrastive_rows_symmetric_form_equals_the_general_one(distance):
    # `symmetric=True` (a batch against itself, one backward matmul) is asked for explicitly, not
    # guessed from `queries is reference`; both forms give the same values and gradients.
    from rankloss_tf.ops.fused import contrastive_rows

    labels, x = random_batch(6, batch_size=11, num_classes=3)
    x = tf.constant(x)
    same = tf.equal(labels[:, None], labels[None, :])

    def value_and_gradient(symmetric):
        with tf.GradientTape() as tape:
            tape.watch(x)
            rows = contrastive_rows(x, x, same, 1.5, distance, tf.range(11), symmetric=symmetric)
            total = tf.reduce_sum(rows * tf.range(1.0, 12.0))
        return rows, tape.gradient(total, x)

    for got, want in zip(value_and_gradient(True), value_and_gradient(False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
