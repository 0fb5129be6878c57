# %% [markdown]
# # Serving: load the exported SavedModel and answer nearest-neighbour queries
#
# `01_quickstart.py` exports its embedding model as a SavedModel with one signature:
#
#     serving_default(images: uint8 [N, H, W, C]) -> {"embeddings": float32 [N, D]}
#
# The preprocessing is inside, so a client sends raw images. This example loads the
# export in the two usual ways, plain TensorFlow (`tf.saved_model.load`, what TF
# Serving does) and Keras 3 (`keras.layers.TFSMLayer`), embeds a gallery of images once,
# and then answers queries by nearest-neighbour search in the gallery.
#
# Run `python examples/01_quickstart.py` first, then `python examples/05_serving.py` with
# the same `--dataset` / `--data-dir` (add `--smoke` to both for runs of a few seconds on
# the digits).

# %%
import argparse
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import rankloss_tf as rl
from rankloss_tf import evaluation, export, models

parser = argparse.ArgumentParser(description="Serve an exported embedding model.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
parser.add_argument("--model", default="runs/quickstart/embedder", help="the SavedModel directory")
parser.add_argument("--dataset", default="omniglot", choices=["omniglot", "digits"])
parser.add_argument("--data-dir", help="a local copy of Omniglot (default: TensorFlow Datasets)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
DATASET = "digits" if SMOKE else args.dataset
IMAGE_SIZE = 28 if DATASET == "omniglot" else None
K = 5
model_dir = Path(args.model)
test = rl.datasets.load(DATASET, "test", data_dir=args.data_dir, image_size=IMAGE_SIZE)
image_shape = tuple(test.element_spec[0].shape)

if not (model_dir / "saved_model.pb").is_file():
    # Without the quickstart's export, export an untrained model of the same shape, so
    # that the example runs on its own (its answers are then those of random features).
    print(f"{model_dir} not found: run 01_quickstart.py first; exporting an untrained model instead")
    keras.utils.set_random_seed(0)
    export.export_saved_model(models.build_embedding_model(image_shape, embedding_dim=64), model_dir)

# %% [markdown]
# ## Load the SavedModel
#
# With plain TensorFlow: the signature takes the keyword `images` and returns a dict.
# With Keras: `TFSMLayer` wraps the same endpoint as a layer, to use inside a Keras
# model. Both give the same embeddings.

# %%
loaded = tf.saved_model.load(str(model_dir))
serve = loaded.signatures["serving_default"]
print("signature:", serve.structured_input_signature[1], "->", serve.structured_outputs)

layer = keras.layers.TFSMLayer(str(model_dir), call_endpoint="serving_default")
images_input = keras.Input(shape=image_shape, dtype="uint8")
keras_embedder = keras.Model(images_input, layer(images_input)["embeddings"])

probe = next(iter(test.batch(8)))[0]
np.testing.assert_allclose(serve(images=probe)["embeddings"], keras_embedder(probe), atol=1e-6)

# %% [markdown]
# ## Embed the gallery once
#
# The gallery: the test classes, which the quickstart model never saw in training. Some
# images are held out as queries. Embeddings of the gallery are computed
# once and kept; a query costs one forward pass and one nearest-neighbour search.

# %%
images, labels = (np.concatenate(part) for part in zip(*test.batch(1024)))
rng = np.random.default_rng(0)
query_index = rng.choice(len(labels), size=10 if SMOKE else 100, replace=False)
is_gallery = np.ones(len(labels), bool)
is_gallery[query_index] = False
gallery_images, gallery_labels = images[is_gallery], labels[is_gallery]
gallery = np.concatenate(
    [serve(images=batch)["embeddings"].numpy() for batch in np.array_split(gallery_images, len(gallery_images) // 256 + 1)]
)
print("gallery:", gallery.shape)

# %% [markdown]
# ## Answer queries
#
# `rankloss_tf.evaluation.nearest_neighbours` searches exactly, in blocks of queries, so
# it scales to large galleries (memory O(block x gallery)); any vector index (FAISS,
# ScaNN) works on the same embeddings.

# %%
def answer(query_images, k=K):
    """Labels and cosine similarities of the k gallery images nearest to each query."""
    queries = serve(images=tf.convert_to_tensor(query_images, tf.uint8))["embeddings"].numpy()
    indices, similarities = evaluation.nearest_neighbours(queries, gallery, k=k, metric="cosine")
    return gallery_labels[indices], similarities


neighbour_labels, similarities = answer(images[query_index])
for label, found, scores in list(zip(labels[query_index], neighbour_labels, similarities))[:5]:
    print(f"query of class {label}: neighbours {found.tolist()}, similarities", " ".join(f"{s:.3f}" for s in scores))
precision = np.mean(neighbour_labels == labels[query_index][:, None])
print(f"precision@{K} over {len(query_index)} queries: {precision:.3f}")
