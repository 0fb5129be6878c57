# %% [markdown]
# # TF 1.x graph and Session training with `rankloss_tf.compat.v1`
#
# Code written for TF 1.x used `tf.contrib.losses.metric_learning`, which is gone from
# TF 2. `rankloss_tf.compat.v1` has the same functions, signatures and numbers, and
# they build into a TF 1.x graph, so such code keeps its structure (graph, input
# iterator, optimizer, `Session`) and changes one import:
#
# ```python
# from tensorflow.contrib.losses import metric_learning      # before (TF 1.x)
# import rankloss_tf.compat.v1 as metric_learning            # after (TF 2, v1 graph mode)
# ```
#
# This example trains a two-layer network on the digits 0-4 with contrib's semi-hard
# triplet loss (on squared L2 distances, as contrib defined it), in a `Session`, then
# evaluates zero-shot retrieval on the digits 5-9 (the digits check the mechanics; on
# them, pixels alone already retrieve well: see the quickstart for learning on Omniglot).
#
# Run: `python examples/03_tf1_session.py` (add `--smoke` for a run of a few seconds).

# %%
import argparse
import os

import numpy as np
import sklearn.datasets
import tensorflow as tf

import rankloss_tf as rl
import rankloss_tf.compat.v1 as metric_learning

parser = argparse.ArgumentParser(description="TF 1.x Session training with rankloss_tf.compat.v1.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
STEPS = 20 if SMOKE else 2000

tf.compat.v1.disable_eager_execution()  # TF 1.x semantics: build a graph, run it in a Session
tf.compat.v1.set_random_seed(0)

# %% [markdown]
# ## Data: arrays and a P x K input pipeline
#
# The digits as flat float vectors; classes 0-4 for training, 5-9 for testing.
# `rankloss_tf.data.pk_batches` is a `tf.data` pipeline, so in graph mode it feeds the
# graph through a one-shot iterator, like any TF 1.x input pipeline.

# %%
digits = sklearn.datasets.load_digits()
features = (digits.data / 16.0).astype("float32")
is_train = digits.target < 5
batches = rl.data.pk_batches(
    features[is_train], digits.target[is_train], classes_per_batch=5, samples_per_class=8, seed=0
)
batch_features, batch_labels = tf.compat.v1.data.make_one_shot_iterator(batches).get_next()

# %% [markdown]
# ## The graph: network, loss, optimizer
#
# The network's variables are created once and shared by the training branch (fed by
# the iterator) and the evaluation branch (fed by a placeholder).

# %%
initializer = tf.compat.v1.glorot_uniform_initializer(seed=0)
weights = {
    "hidden": tf.compat.v1.get_variable("hidden", [64, 128], initializer=initializer),
    "hidden_bias": tf.compat.v1.get_variable("hidden_bias", [128], initializer=tf.compat.v1.zeros_initializer()),
    "output": tf.compat.v1.get_variable("output", [128, 32], initializer=initializer),
}


def embed(inputs):
    hidden = tf.nn.relu(tf.matmul(inputs, weights["hidden"]) + weights["hidden_bias"])
    return tf.math.l2_normalize(tf.matmul(hidden, weights["output"]), axis=1)


loss = metric_learning.triplet_semihard_loss(batch_labels, embed(batch_features), margin=0.2)
train_op = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss)

test_features = tf.compat.v1.placeholder(tf.float32, [None, 64], name="test_features")
test_embeddings = embed(test_features)

# %% [markdown]
# ## Train and evaluate in a Session
#
# Zero-shot Recall@1: the share of test digits whose nearest other test digit has the
# same class.

# %%
def recall_at_1(embeddings, labels):
    similarities = embeddings @ embeddings.T
    np.fill_diagonal(similarities, -np.inf)
    return np.mean(labels[similarities.argmax(axis=1)] == labels)


with tf.compat.v1.Session() as session:
    session.run(tf.compat.v1.global_variables_initializer())
    test_feed = {test_features: features[~is_train]}
    before = recall_at_1(session.run(test_embeddings, test_feed), digits.target[~is_train])
    for step in range(1, STEPS + 1):
        _, value = session.run([train_op, loss])
        if step % max(STEPS // 5, 1) == 0:
            print(f"step {step}: loss {value:.4f}")
    after = recall_at_1(session.run(test_embeddings, test_feed), digits.target[~is_train])

print(f"zero-shot Recall@1 on digits 5-9: {before:.3f} before training, {after:.3f} after")
