"""Reference loss values and gradients from tensorflow-addons 0.23 or pytorch-metric-learning 2.9.

Run by ``golden.py`` in a reference environment as
``python _golden_worker.py tfa|pml cases.npz``. Each case in the file holds
``<name>/labels`` and ``<name>/embeddings``; the worker prints one JSON line
``RESULT [{"case", "loss", "params", "value", "gradient"}, ...]`` with the loss
value and its gradient with respect to the embeddings.
"""

import json
import sys

import numpy as np

TFA_METRICS = ("L2", "squared-L2", "angular")


def cases(path):
    """{case name: (labels, embeddings)} from the .npz file."""
    data = np.load(path)
    names = sorted({key.split("/")[0] for key in data.files})
    return {name: (data[f"{name}/labels"], data[f"{name}/embeddings"]) for name in names}


def tfa_references(batches):
    """tfa's semi-hard, hard, contrastive and N-pairs losses on every case."""
    import tensorflow as tf
    import tensorflow_addons as tfa

    def value_and_gradient(function, embeddings):
        variable = tf.Variable(embeddings)
        with tf.GradientTape() as tape:
            value = function(variable)
        return float(value.numpy()), tape.gradient(value, variable).numpy().tolist()

    def off_diagonal(matrix):
        size = matrix.shape[0]
        return tf.boolean_mask(matrix, ~np.eye(size, dtype=bool))

    rows = []
    for case, (labels, embeddings) in batches.items():
        y = tf.constant(labels)
        specs = []
        for metric in TFA_METRICS:
            for margin in (1.0, 0.2):
                loss = tfa.losses.TripletSemiHardLoss(margin=margin, distance_metric=metric)
                specs.append(("semihard", {"margin": margin, "distance_metric": metric}, loss))
            for soft in (False, True):
                loss = tfa.losses.TripletHardLoss(margin=1.0, soft=soft, distance_metric=metric)
                specs.append(("hard", {"margin": 1.0, "soft": soft, "distance_metric": metric}, loss))
        for name, params, loss in specs:
            value, gradient = value_and_gradient(lambda e, loss=loss: loss(y, e), embeddings)
            rows.append({"case": case, "loss": name, "params": params, "value": value, "gradient": gradient})
        same = tf.cast(tf.equal(y[:, None], y[None, :]), tf.float32)
        for margin in (1.0, 0.5):
            loss = tfa.losses.ContrastiveLoss(margin=margin)

            def contrastive(e, loss=loss):
                distances = tfa.losses.metric_learning.pairwise_distance(e, squared=False)
                return loss(off_diagonal(same), off_diagonal(distances))

            value, gradient = value_and_gradient(contrastive, embeddings)
            rows.append({"case": case, "loss": "contrastive", "params": {"margin": margin},
                         "value": value, "gradient": gradient})
        if np.array_equal(labels[0::2], labels[1::2]):  # an N-pair batch: classes x 2
            loss = tfa.losses.NpairsLoss()
            value, gradient = value_and_gradient(
                lambda e: loss(y[0::2], tf.matmul(e[0::2], e[1::2], transpose_b=True)), embeddings)
            rows.append({"case": case, "loss": "npairs", "params": {}, "value": value, "gradient": gradient})
    return rows


def pml_references(batches):
    """PML's AngularLoss(alpha) for alpha 40 and 45 on every unit-norm case."""
    import torch
    from pytorch_metric_learning import losses

    rows = []
    for case, (labels, embeddings) in batches.items():
        if not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5):
            continue  # PML normalises anchors and positives but not negatives: unit-norm only
        for alpha in (40, 45):
            leaf = torch.tensor(embeddings, dtype=torch.float32, requires_grad=True)
            value = losses.AngularLoss(alpha=alpha)(leaf, torch.tensor(labels, dtype=torch.long))
            value.backward()
            rows.append({"case": case, "loss": "angular", "params": {"alpha": alpha},
                         "value": float(value.detach()), "gradient": leaf.grad.numpy().tolist()})
    return rows


def main():
    which, path = sys.argv[1], sys.argv[2]
    build = {"tfa": tfa_references, "pml": pml_references}[which]
    print("RESULT " + json.dumps(build(cases(path))), flush=True)


if __name__ == "__main__":
    main()
