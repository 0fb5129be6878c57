# %% [markdown]
# # Cross-modal retrieval: image embeddings against fixed text embeddings
#
# In cross-modal retrieval, queries of one modality (a caption) retrieve items of another
# (images). A common recipe: keep a pretrained text encoder frozen and train an image
# encoder so that every image lands closer to the text embedding of its own class (or
# caption) than to any other text, by a margin: a triplet ranking loss whose anchors are
# images and whose positives and negatives are texts.
#
# The kernels in `rankloss_tf.ops` take such a reference set directly:
#
# ```python
# rl.ops.triplet_hard_loss(image_labels, image_embeddings, margin=0.2,
#                          reference_labels=text_labels, reference_embeddings=text_embeddings)
# ```
#
# mines, for every image, its positive and its hardest negative among the texts. Using it
# in both directions (image -> texts and text -> images) is the VSE++ loss (Faghri et al.,
# "VSE++: Improving Visual-Semantic Embeddings with Hard Negatives", BMVC 2018). Here the
# images are scikit-learn's digits and the "text encoder" is a fixed character n-gram
# hashing of the class names: put the output of your own frozen text model in its place.
#
# Run: `python examples/06_cross_modal.py` (add `--smoke` for a run of a few seconds).

# %%
import argparse
import os

import keras
import numpy as np
import sklearn.datasets
import tensorflow as tf
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.model_selection import train_test_split

import rankloss_tf as rl

parser = argparse.ArgumentParser(description="Train image embeddings against fixed text embeddings.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
STEPS = 40 if SMOKE else 1500
EMBEDDING_DIM = 64
MARGIN = 0.2
keras.utils.set_random_seed(0)

# %% [markdown]
# ## The two modalities
#
# Images: the 1,797 digits, split 70 / 30 with every class on both sides (this is
# retrieval among known classes, unlike the zero-shot protocol of the other examples).
# Texts: one fixed, L2-normalised embedding per class name.

# %%
digits = sklearn.datasets.load_digits()
images = (digits.images[..., np.newaxis] / 16.0).astype("float32")
x_train, x_test, y_train, y_test = train_test_split(
    images, digits.target, test_size=0.3, stratify=digits.target, random_state=0
)
class_names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
text_encoder = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=EMBEDDING_DIM)
text_embeddings = tf.constant(text_encoder.transform(class_names).toarray(), tf.float32)  # unit rows
text_labels = tf.range(len(class_names), dtype=tf.int64)
print("text embeddings:", text_embeddings.shape)

# %% [markdown]
# ## The image encoder and the training step
#
# A custom training step: the image encoder is trained, the text embeddings stay fixed.
# The loss is the sum of two triplet ranking losses over the reference path of the
# kernels: images as anchors against all texts, and texts as anchors against the images
# of the batch. Any batch works, since every image has its positive among the texts.

# %%
image_encoder = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(EMBEDDING_DIM),
        keras.layers.UnitNormalization(),
    ]
)
optimizer = keras.optimizers.Adam(1e-3)


@tf.function
def train_step(batch_images, batch_labels):
    with tf.GradientTape() as tape:
        image_embeddings = image_encoder(batch_images, training=True)
        image_to_text = rl.ops.triplet_hard_loss(
            batch_labels, image_embeddings, margin=MARGIN,
            reference_labels=text_labels, reference_embeddings=text_embeddings,
        )
        text_to_image = rl.ops.triplet_hard_loss(
            text_labels, text_embeddings, margin=MARGIN,
            reference_labels=batch_labels, reference_embeddings=image_embeddings,
        )
        loss = tf.reduce_mean(image_to_text) + tf.reduce_mean(text_to_image)
    gradients = tape.gradient(loss, image_encoder.trainable_variables)
    optimizer.apply_gradients(zip(gradients, image_encoder.trainable_variables))
    return loss


# %% [markdown]
# ## Retrieval in both directions
#
# Image -> text: the nearest class name of each test image (Recall@1). Text -> image: for
# each class name, the share of its class among the 10 nearest test images
# (precision@10), averaged over the class names.

# %%
def evaluate():
    image_embeddings = image_encoder.predict(x_test, verbose=0)
    similarities = image_embeddings @ text_embeddings.numpy().T  # [images, texts]
    image_to_text = np.mean(similarities.argmax(axis=1) == y_test)
    top_images = np.argsort(-similarities.T, axis=1)[:, :10]  # [texts, 10]
    text_to_image = np.mean(y_test[top_images] == np.arange(len(class_names))[:, None])
    return image_to_text, text_to_image


print("before training: image->text R@1 %.3f, text->image P@10 %.3f" % evaluate())
batches = (
    tf.data.Dataset.from_tensor_slices((x_train, y_train))
    .shuffle(len(x_train), seed=0)
    .repeat()
    .batch(64)
)
for step, (batch_images, batch_labels) in enumerate(batches.take(STEPS), start=1):
    loss = train_step(batch_images, batch_labels)
    if step % max(STEPS // 5, 1) == 0:
        print(f"step {step}: loss {float(loss):.4f}")
image_to_text, text_to_image = evaluate()
print(f"after training:  image->text R@1 {image_to_text:.3f}, text->image P@10 {text_to_image:.3f}")

# %% [markdown]
# ## A text query
#
# The class name "seven" as a query: the labels of its 10 nearest test images.

# %%
query = text_embeddings[class_names.index("seven")].numpy()
nearest = np.argsort(-(image_encoder.predict(x_test, verbose=0) @ query))[:10]
print('query "seven" -> images of digits', y_test[nearest].tolist())
if not SMOKE:
    assert image_to_text > 0.9, "the image encoder should have learnt the texts"
