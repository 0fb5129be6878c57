# %% [markdown]
# # Quickstart: train, evaluate and export an embedding model
#
# Deep metric learning trains a model to map images to embeddings in which images of
# the same class are close and images of different classes are far apart; new classes
# are then recognised by nearest-neighbour search, without retraining. This example
# goes through the whole flow on Omniglot's handwritten characters:
#
# 1. P x K batches: P classes with K samples each, so that every batch holds positive
#    pairs (`rankloss_tf.data.pk_batches`);
# 2. a small CNN that maps uint8 images to unit-norm embeddings
#    (`rankloss_tf.models.build_embedding_model`);
# 3. the angular loss (Wang et al., ICCV 2017) with alpha = 45 degrees;
# 4. zero-shot evaluation: retrieval among characters of alphabets never seen in
#    training (Recall@K, MAP@R, NMI, F1);
# 5. export as a SavedModel that serves raw uint8 images (see `05_serving.py`).
#
# Omniglot comes from TensorFlow Datasets (downloaded on first use), or from a local copy
# of its `images_background_small*.zip` files (`--data-dir`). Offline, use
# `--dataset digits` (scikit-learn's bundled 8x8 digits: train on 0-4, test on 5-9); the
# smoke run (`--smoke`, a few seconds) always uses the digits. The digits check that the
# pipeline runs, not that it learns: their pixels alone already retrieve well, and five
# training classes teach little about the other five. Omniglot shows the learning.
#
# Run: `python examples/01_quickstart.py [--data-dir DIR | --dataset digits] [--smoke]`.

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
parser.add_argument("--dataset", default="omniglot", choices=["omniglot", "digits"])
parser.add_argument("--data-dir", help="a local copy of Omniglot (default: TensorFlow Datasets)")
parser.add_argument("--output", default="runs/quickstart", help="where to write the export")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
DATASET = "digits" if SMOKE else args.dataset
EPOCHS, STEPS = (1, 5) if SMOKE else (5, 100)
keras.utils.set_random_seed(0)

# %% [markdown]
# ## 1. P x K batches
#
# `rankloss_tf.datasets.load` returns a `tf.data.Dataset` of (uint8 image, label) with
# disjoint train and test classes; Omniglot's 105x105 images are resized to 28x28.
# `pk_batches` turns the training half into an endless, seeded stream of batches of
# P classes x K samples (32 x 4; the digits have only 5 training classes: 5 x 8).

# %%
IMAGE_SIZE, P, K = (28, 32, 4) if DATASET == "omniglot" else (None, 5, 8)
train = rl.datasets.load(DATASET, "train", data_dir=args.data_dir, image_size=IMAGE_SIZE).cache()
test = rl.datasets.load(DATASET, "test", data_dir=args.data_dir, image_size=IMAGE_SIZE).cache()
batches = rl.data.pk_batches(train, classes_per_batch=P, samples_per_class=K, seed=0)
images, labels = next(iter(batches))
print("batch:", images.shape, images.dtype, "labels:", labels.numpy()[: 3 * K], "...")

# %% [markdown]
# ## 2. The embedding model
#
# The model takes raw uint8 images (its first layer does the preprocessing) and returns
# L2-normalised embeddings of size 64.

# %%
model = models.build_embedding_model(input_shape=images.shape[1:], embedding_dim=64)
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
    print(f"{name} on unseen classes: {before[name]:.3f} before training, {metrics[name]:.3f} after")

# %% [markdown]
# ## 5. Export
#
# The SavedModel has one signature, `serving_default(images: uint8 [N, H, W, 1])
# -> {"embeddings": float32 [N, 64]}`, and loads without rankloss_tf.

# %%
export_dir = export.export_saved_model(model, Path(args.output) / "embedder", overwrite=True)
served = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
sample = next(iter(test.batch(4)))[0]
np.testing.assert_allclose(served(images=sample)["embeddings"], model(sample), atol=1e-5)
print("exported to", export_dir)
