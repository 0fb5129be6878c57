# %% [markdown]
# # Serving: an index that travels inside one SavedModel
#
# `01_quickstart.py` exports its embedding model as a SavedModel. This example turns it into a
# **retrieval index**: the gallery's embeddings, ids and labels are stored as variables next to
# the network, in ONE SavedModel with three signatures:
#
#     search(images: uint8 [N, H, W, C], k: int32)   -> {ids, scores, labels, paths, indices: [N, k]}
#     embed(images: uint8 [N, H, W, C])              -> {embeddings: float32 [N, D]}
#     search_embeddings(embeddings: float32 [N, D], k: int32) -> as search
#
# Images of any size, gray, RGB or RGBA, are conformed to the model's input inside. The search
# is exact (blocked matmul + top-k, the evaluation kernel), so the server answers exactly what
# `rankloss_tf.retrieval.Index` and `rankloss_tf.evaluation.nearest_neighbours` answer. It loads
# with `tf.saved_model.load` (what TF Serving does) or `keras.layers.TFSMLayer`, without this
# package. The index directory holds one numbered version per save (`save_index` returns the
# new one: the path `tf.saved_model.load` takes; TF Serving takes the index directory itself,
# see docs/retrieval.md). A SavedModel is a program: load only indexes you trust.
#
# Run `python examples/01_quickstart.py` first, then `python examples/05_serving.py` with
# the same `--dataset` / `--data-dir` (add `--smoke` to both for runs of a few seconds on
# the digits). The command line does the same: `rankloss-tf index --model MODEL --gallery
# DATASET --out DIR` and `rankloss-tf search --index DIR IMAGE...`.

# %%
import argparse
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import rankloss_tf as rl
from rankloss_tf import evaluation, export, models, retrieval

parser = argparse.ArgumentParser(description="Serve a retrieval index from one SavedModel.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
parser.add_argument("--model", default="runs/quickstart/embedder", help="the embedding SavedModel directory")
parser.add_argument("--index", default="runs/quickstart/index", help="where to write the index SavedModel")
parser.add_argument("--dataset", default="omniglot", choices=["omniglot", "digits"])
parser.add_argument("--data-dir", help="a local copy of Omniglot (default: TensorFlow Datasets)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
DATASET = "digits" if SMOKE else args.dataset
IMAGE_SIZE = 28 if DATASET == "omniglot" else None
K = 5
model_dir, index_dir = Path(args.model), Path(args.index)
test = rl.datasets.load(DATASET, "test", data_dir=args.data_dir, image_size=IMAGE_SIZE)
image_shape = tuple(test.element_spec[0].shape)

if not (model_dir / "saved_model.pb").is_file():
    # Without the quickstart's export, export an untrained model of the same shape, so
    # that the example runs on its own (its answers are then those of random features).
    print(f"{model_dir} not found: run 01_quickstart.py first; exporting an untrained model instead")
    keras.utils.set_random_seed(0)
    export.export_saved_model(models.build_embedding_model(image_shape, embedding_dim=64), model_dir)

# %% [markdown]
# ## Build the index
#
# The gallery: the test classes, which the quickstart model never saw in training; some
# images are held out as queries. Each gallery item gets an id (a string), a label and, where
# known, its source path. `add` embeds the images once; `remove` drops items by id.

# %%
images, labels = (np.concatenate(part) for part in zip(*test.batch(1024)))
rng = np.random.default_rng(0)
query_index = rng.choice(len(labels), size=10 if SMOKE else 100, replace=False)
is_gallery = np.ones(len(labels), bool)
is_gallery[query_index] = False
gallery_ids = np.array([f"{DATASET}/test/{i:05d}" for i in range(len(labels))])[is_gallery]

index = retrieval.Index(model_dir, metric="cosine")
index.add(images[is_gallery], labels[is_gallery], ids=gallery_ids)
print(f"index: {len(index)} items of dimension {index.embedding_dim}")
# A new version of the index directory; readers of the previous one are never handed a mix.
saved = retrieval.save_index(index, index_dir, overwrite=True)  # replaces only an index of rankloss_tf
print("written to", saved, "with", sorted(p.name for p in saved.iterdir()))

# %% [markdown]
# ## Serve it without this package
#
# Plain TensorFlow: the signatures take keyword tensors and return dicts. Keras:
# `TFSMLayer` wraps the same endpoint as a layer. Both answer what the Python index answers.

# %%
loaded = tf.saved_model.load(str(saved))
search = loaded.signatures["search"]
print("search:", search.structured_input_signature[1], "->", sorted(search.structured_outputs))

queries, query_labels = images[query_index], labels[query_index]
served = search(images=tf.constant(queries), k=tf.constant(K))
python = index.search(queries, k=K)
# The same neighbours up to the order of near-ties (the graph and Python embed in different
# batches; CPUs' kernels round differently): the scores agree rank by rank.
np.testing.assert_allclose(served["scores"].numpy(), python.scores, rtol=1e-5, atol=1e-5)
layer = keras.layers.TFSMLayer(str(saved), call_endpoint="search")
assert (np.asarray(layer(tf.constant(queries), k=tf.constant(K))["ids"]) == served["ids"].numpy()).all()

for label, ids, found, scores in list(zip(query_labels, served["ids"].numpy(), served["labels"].numpy(),
                                          served["scores"].numpy()))[:5]:
    print(f"query of class {label}: {[i.decode() for i in ids[:3]]}... classes {found.tolist()}, "
          "similarities", " ".join(f"{s:.3f}" for s in scores))

# %% [markdown]
# ## Any image size, gray or colour
#
# The signature resizes (antialiased bilinear) and converts channels itself: an RGB query
# twice the size finds the same neighbours as the original, up to resampling.

# %%
bigger = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(queries[:3])), [2 * s for s in image_shape[:2]])
bigger = tf.cast(tf.round(bigger), tf.uint8)
print("RGB x2 queries:", [i.decode() for i in search(images=bigger, k=tf.constant(1))["ids"].numpy()[:, 0]],
      "original:", python.ids[:3, 0].tolist())

# %% [markdown]
# ## Evaluate the queries against the gallery
#
# `evaluation.query_gallery_metrics` takes the index as its gallery (the In-shop / SOP
# protocol: queries and gallery are separate sets).

# %%
metrics = evaluation.query_gallery_metrics(index.embed(queries), query_labels, index, ks=(1, K))
print(evaluation.format_table(metrics))
