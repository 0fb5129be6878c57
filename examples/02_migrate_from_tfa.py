# %% [markdown]
# # Migrating from TensorFlow Addons
#
# TensorFlow Addons (tfa) reached end of life in 2024 and does not import under Keras 3.
# `rankloss_tf.compat.tfa` keeps tfa's loss names, signatures and numbers, so that
# migrating is a one-line change:
#
# ```python
# import tensorflow_addons as tfa                 # before
# loss = tfa.losses.TripletSemiHardLoss(margin=1.0)
#
# import rankloss_tf.compat.tfa as tfa_losses     # after
# loss = tfa_losses.TripletSemiHardLoss(margin=1.0)
# ```
#
# The native losses (`rankloss_tf.TripletSemiHardLoss`, ...) use one vocabulary
# (`distance="l2"` instead of `distance_metric="L2"`) and give the same values. This
# example trains the same model twice, once with each, and shows identical losses; then
# it checks the other tfa losses against their native counterparts on one batch.
#
# Run: `python examples/02_migrate_from_tfa.py` (add `--smoke` for a run of a few seconds).

# %%
import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import rankloss_tf as rl
import rankloss_tf.compat.tfa as tfa_losses

parser = argparse.ArgumentParser(description="Train with the tfa-compatible and the native loss.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
EPOCHS, STEPS = (2, 5) if SMOKE else (5, 50)

keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()  # the two runs must be comparable bit for bit

# %% [markdown]
# ## Data: P x K batches of digits
#
# Ranking losses mine their tuples inside the batch, so every batch holds P classes with
# K samples each. `rankloss_tf.data.pk_batches` builds them, seeded: both runs below see
# the same batches. The digits (scikit-learn's 8x8 images, classes 0-4 for training)
# need no download.

# %%
train = rl.datasets.load("digits", "train")
batches = rl.data.pk_batches(train, classes_per_batch=5, samples_per_class=8, seed=0)
images, labels = next(iter(batches))
print("one batch:", images.shape, images.dtype, "labels", labels.numpy())


# %% [markdown]
# ## The same training, twice
#
# One model architecture, the same initial weights, the same batches: first with the
# tfa-compatible `TripletSemiHardLoss(distance_metric="L2")`, then with the native
# `TripletSemiHardLoss(distance="l2")`.

# %%
def build_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(16),
            keras.layers.UnitNormalization(),  # tfa's tutorials used a Lambda(tf.math.l2_normalize)
        ]
    )


initial_weights = build_model().get_weights()
histories = {}
for name, loss in [
    ("compat.tfa", tfa_losses.TripletSemiHardLoss(margin=1.0, distance_metric="L2")),
    ("native", rl.TripletSemiHardLoss(margin=1.0, distance="l2")),
]:
    model = build_model()
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    history = model.fit(batches, epochs=EPOCHS, steps_per_epoch=STEPS, shuffle=False, verbose=0)
    histories[name] = np.array(history.history["loss"])
    print(f"{name:>10}: loss per epoch {np.round(histories[name], 6)}")

np.testing.assert_allclose(histories["compat.tfa"], histories["native"], rtol=1e-6)
print("identical training curves: max difference",
      np.abs(histories["compat.tfa"] - histories["native"]).max())

# %% [markdown]
# ## The other tfa losses, on one batch
#
# | tfa | native | how `y_pred` differs |
# | --- | --- | --- |
# | `TripletHardLoss(distance_metric="L2")` | `TripletHardLoss(distance="l2")` | same |
# | `ContrastiveLoss(margin)` | `ContrastiveLoss(margin)` | tfa: one distance per pair, binary labels; native: embeddings, class labels, all pairs |
# | `NpairsLoss()` | `NPairLoss(l2_reg=0.0)` | tfa: similarity matrix anchors @ positives^T; native: embeddings of an N-pair batch |

# %%
embeddings = model(images)
checks = {
    "TripletHardLoss": (
        tfa_losses.TripletHardLoss(margin=1.0, distance_metric="L2")(labels, embeddings),
        rl.TripletHardLoss(margin=1.0, distance="l2")(labels, embeddings),
    )
}

# ContrastiveLoss: tfa takes the distance of every pair and a same-class indicator.
distances = rl.ops.pairwise_distances(embeddings, "l2")
off_diagonal = ~np.eye(len(labels), dtype=bool)
same_class = (labels[:, None] == labels[None, :]).numpy()
checks["ContrastiveLoss"] = (
    tfa_losses.ContrastiveLoss(margin=1.0)(same_class[off_diagonal], distances.numpy()[off_diagonal]),
    rl.ContrastiveLoss(margin=1.0)(labels, embeddings),
)

# NpairsLoss: tfa takes S = anchors @ positives^T; the native loss takes an N-pair batch
# (per class: anchor, then positive) and builds S itself.
anchors, positives = embeddings[0::8], embeddings[1::8]  # the first two samples of each class
npair_labels = labels[0::8]
npair_batch = tf.reshape(tf.stack([anchors, positives], axis=1), [-1, embeddings.shape[1]])
checks["NpairsLoss"] = (
    tfa_losses.NpairsLoss()(npair_labels, tf.matmul(anchors, positives, transpose_b=True)),
    rl.NPairLoss(l2_reg=0.0)(tf.repeat(npair_labels, 2), npair_batch),
)

for name, (tfa_value, native_value) in checks.items():
    print(f"{name:>16}: compat.tfa {float(tfa_value):.6f}   native {float(native_value):.6f}")
    np.testing.assert_allclose(float(tfa_value), float(native_value), rtol=1e-5)
