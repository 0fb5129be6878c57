# %% [markdown]
# # Quickstart: train, evaluate and export an embedding model
#
# Deep metric learning trains a model to map images to embeddings in which images of
# the same class are close and images of different classes are far apart; new classes
# are then recognised by nearest-neighbour search, without retraining. This example
# goes through the whole flow on scikit-learn's handwritten digits (no download):
#
# 1. P x K batches: P classes with K samples each, so that every batch holds positive
#    pairs (`rankloss_tf.data.pk_batches`);
# 2. a small CNN that maps uint8 images to unit-norm embeddings
#    (`rankloss_tf.models.build_embedding_model`);
# 3. the angular loss (Wang et al., ICCV 2017) with alpha = 45 degrees;
# 4. zero-shot evaluation: train on digits 0-4, retrieve among digits 5-9, never seen
#    in training (Recall@K, MAP@R, NMI, F1);
# 5. export as a SavedModel that serves raw uint8 images (see `05_serving.py`).
#
# Run: `python examples/01_quickstart.py` (add `--smoke` for a run of a few seconds).

# %%
import argparse
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import rankloss_tf as rl
from rankloss_tf import evaluation, export, models

parser = argparse.ArgumentParser(description="Train, evaluate and export an embedding model.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
parser.add_argument("--output", default="runs/quickstart", help="where to write the export")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
EPOCHS, STEPS = (1, 5) if SMOKE else (10, 100)
keras.utils.set_random_seed(0)

# %% [markdown]
# ## 1. P x K batches
#
# `rankloss_tf.datasets.load` returns a `tf.data.Dataset` of (uint8 image, label) with
# disjoint train and test classes. `pk_batches` turns the training half into an endless,
# seeded stream of batches of 5 classes x 8 samples.

# %%
train = rl.datasets.load("digits", "train")  # digits 0-4, 8x8x1 uint8
test = rl.datasets.load("digits", "test")  # digits 5-9
batches = rl.data.pk_batches(train, classes_per_batch=5, samples_per_class=8, seed=0)
images, labels = next(iter(batches))
print("batch:", images.shape, images.dtype, "labels:", labels.numpy())

# %% [markdown]
# ## 2. The embedding model
#
# The model takes raw uint8 images (its first layer does the preprocessing) and returns
# L2-normalised embeddings of size 32.

# %%
model = models.build_embedding_model(input_shape=(8, 8, 1), embedding_dim=32)
model.summary()

# %% [markdown]
# ## 3. Train with the angular loss
#
# The loss takes the integer labels as `y_true` and the embeddings as `y_pred`, and mines
# its (anchor, positive, negatives) tuples inside each batch.

# %%
test_embeddings, test_labels = evaluation.embed_dataset(model, test)
before = evaluation.evaluate(test_embeddings, test_labels, clustering=False)

model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=rl.AngularLoss(alpha=45))
history = model.fit(batches, epochs=EPOCHS, steps_per_epoch=STEPS, shuffle=False, verbose=2)

# %% [markdown]
# ## 4. Zero-shot evaluation
#
# Every test image queries all the others: Recall@K is the share of queries with an
# image of their class among their K nearest neighbours; MAP@R and R-precision measure
# the whole ranking; NMI and F1 measure a k-means clustering of the embeddings.

# %%
test_embeddings, test_labels = evaluation.embed_dataset(model, test)
metrics = evaluation.evaluate(test_embeddings, test_labels)
print(evaluation.format_table(metrics))
for name in ("recall@1", "map@r"):
    print(f"{name} on unseen digits: {before[name]:.3f} before training, {metrics[name]:.3f} after")

# %% [markdown]
# ## 5. Export
#
# The SavedModel has one signature, `serving_default(images: uint8 [N, 8, 8, 1])
# -> {"embeddings": float32 [N, 32]}`, and loads without rankloss_tf.

# %%
export_dir = export.export_saved_model(model, Path(args.output) / "embedder", overwrite=True)
served = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
sample = next(iter(test.batch(4)))[0]
np.testing.assert_allclose(served(images=sample)["embeddings"], model(sample), atol=1e-5)
print("exported to", export_dir)
