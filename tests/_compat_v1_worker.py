"""TF 1.x graph-mode run of `rankloss_tf.compat.v1` (eager execution is off process-wide).

`tests/test_compat_v1.py` runs `python tests/_compat_v1_worker.py BATCH.npz`. With
placeholders and a `tf.compat.v1.Session`, the script evaluates every loss and its
gradients (`tf.compat.v1.gradients`) on the batch, then takes `tf.compat.v1.train`
gradient-descent steps on a projection of the features, and prints a JSON report as the
last line of stdout.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rankloss_tf import ops  # noqa: E402
from rankloss_tf.compat import v1  # noqa: E402

KERNELS = ("contrastive_loss", "triplet_semihard_loss", "triplet_hard_loss", "npair_loss", "angular_loss", "npair_angular_loss")

LEARNING_RATE = 0.05
TRAIN_STEPS = 5


def graph_losses(labels, pair_labels, binary, embeddings, anchors, positives, indicators):
    """Every compat.v1 loss on placeholders (`indicators`: NumPy [N, C]): `{name: scalar tensor}`."""
    sparse_rows = [tf.sparse.from_dense(tf.constant(row, tf.float32)) for row in indicators]
    return {
        "triplet_semihard_loss": v1.triplet_semihard_loss(labels, embeddings, margin=0.5),
        "lifted_struct_loss": v1.lifted_struct_loss(labels, embeddings, margin=1.0),
        "contrastive_loss": v1.contrastive_loss(binary, anchors, positives, margin=1.5),
        "npairs_loss": v1.npairs_loss(pair_labels, anchors, positives, reg_lambda=0.01, print_losses=True),
        "angular_loss": v1.angular_loss(pair_labels, anchors, positives, alpha=40.0),
        "npair_angular_loss": v1.npair_angular_loss(pair_labels, anchors, positives, alpha=45.0, lam=2.0),
        "npairs_loss_multilabel": v1.npairs_loss_multilabel(sparse_rows, anchors, positives, reg_lambda=0.01),
        "cluster_loss": v1.cluster_loss(labels, embeddings, margin_multiplier=2.0),
        "cluster_loss_greedy": v1.cluster_loss(labels, embeddings, 2.0, enable_pam_finetuning=False),
    }


def main(path):
    tf.compat.v1.disable_eager_execution()
    data = np.load(path)
    dim = data["embeddings"].shape[1]
    labels = tf.compat.v1.placeholder(tf.int32, [None], name="labels")
    pair_labels = tf.compat.v1.placeholder(tf.int32, [None], name="pair_labels")
    binary = tf.compat.v1.placeholder(tf.int32, [None], name="binary")
    embeddings = tf.compat.v1.placeholder(tf.float32, [None, dim], name="embeddings")
    anchors = tf.compat.v1.placeholder(tf.float32, [None, dim], name="anchors")
    positives = tf.compat.v1.placeholder(tf.float32, [None, dim], name="positives")
    losses = graph_losses(labels, pair_labels, binary, embeddings, anchors, positives, data["indicators"])
    gradients = {
        name: tf.compat.v1.gradients(loss, [embeddings, anchors, positives], unconnected_gradients="zero")
        for name, loss in losses.items()
    }
    feed = {
        labels: data["labels"],
        pair_labels: data["pair_labels"],
        binary: data["binary"],
        embeddings: data["embeddings"],
        anchors: data["anchors"],
        positives: data["positives"],
    }

    # Training: embeddings = features @ W, one plain-SGD optimizer per loss.
    features = tf.compat.v1.placeholder(tf.float32, [None, data["features"].shape[1]], name="features")
    trained = {}
    for name in losses:
        with tf.compat.v1.variable_scope(name):
            weights = tf.compat.v1.get_variable(
                "weights", initializer=tf.constant(data["projection"]), use_resource=False
            )
        projected = tf.matmul(features, weights)
        half = tf.shape(projected)[0] // 2
        pairs = (projected[:half], projected[half:], data["indicators"])
        loss = graph_losses(labels, pair_labels, binary, projected, *pairs)[name]
        step = tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE).minimize(loss)
        trained[name] = (loss, step, weights)
    train_feed = {**feed, features: data["features"]}

    report = {}
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        values, grads = session.run([losses, gradients], feed)
        for name in losses:
            loss, step, weights = trained[name]
            history = []
            for _ in range(TRAIN_STEPS):
                history.append(float(session.run(loss, train_feed)))
                session.run(step, train_feed)
            history.append(float(session.run(loss, train_feed)))
            report[name] = {
                "value": float(values[name]),
                "gradients": [np.asarray(g).tolist() for g in grads[name]],
                "train_losses": history,
                "trained_weights": session.run(weights).tolist(),
            }
    variable_labels = kernels_with_variable_labels(data)
    sys.stdout.write(json.dumps({"executing_eagerly": tf.executing_eagerly(), "losses": report,
                                 "variable_labels": variable_labels}) + "\n")


def kernels_with_variable_labels(data):
    """Every `rankloss_tf.ops` loss kernel of `KERNELS`, its labels held in a resource variable
    (graph-mode custom gradients must not ask for the labels' gradient): `{name: {value, gradient}}`."""
    report = {}
    with tf.Graph().as_default():
        labels = tf.compat.v1.Variable(data["labels"], use_resource=True)  # as a user writes it: trainable
        embeddings = tf.compat.v1.placeholder(tf.float32, [None, data["embeddings"].shape[1]])
        values = {name: tf.reduce_mean(getattr(ops, name)(labels, embeddings)) for name in KERNELS}
        gradients = {name: tf.compat.v1.gradients(value, embeddings)[0] for name, value in values.items()}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            values, gradients = session.run([values, gradients], {embeddings: data["embeddings"]})
    for name in KERNELS:
        report[name] = {"value": float(values[name]), "gradient": np.asarray(gradients[name]).tolist()}
    return report


if __name__ == "__main__":
    main(sys.argv[1])
