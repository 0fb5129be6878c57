# %% [markdown]
# # Multi-device training with cross-replica mining
#
# Under `tf.distribute.MirroredStrategy`, Keras splits every global batch between the
# replicas. A ranking loss mines its tuples inside the batch it sees, so by default each
# replica mines only its own slice: with P x K batches split in two, each replica sees
# half of the classes and half of the negatives. With `cross_replica=True`, every
# replica gathers the embeddings and labels of all replicas and mines over the global
# batch; it computes only its share of the global batch's work, so the summed gradients
# equal those of one device on the whole batch.
#
# This example runs on the GPUs of the machine when there are at least two, and
# otherwise splits the CPU into two logical devices, so that it runs anywhere.
#
# Run: `python examples/04_multi_device.py` (add `--smoke` for a run of a few seconds).

# %%
import argparse
import os

import tensorflow as tf

parser = argparse.ArgumentParser(description="Multi-device training with cross-replica mining.")
parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds, on CPU)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
SMOKE = args.smoke or os.environ.get("RANKLOSS_TF_SMOKE") == "1"
EPOCHS, STEPS = (1, 5) if SMOKE else (10, 100)

# Devices are configured before TensorFlow first uses them.
gpus = tf.config.list_physical_devices("GPU")
if len(gpus) >= 2:
    devices = [f"/gpu:{i}" for i in range(len(gpus))]
else:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    devices = ["/cpu:0", "/cpu:1"]

import keras  # noqa: E402 (after the device set-up)
import numpy as np  # noqa: E402

import rankloss_tf as rl  # noqa: E402
from rankloss_tf import models  # noqa: E402

strategy = tf.distribute.MirroredStrategy(devices)
print("replicas:", strategy.num_replicas_in_sync, devices)
keras.utils.set_random_seed(0)

# %% [markdown]
# ## Data and model
#
# The global batch is P x K = 5 classes x 8 samples; each of the two replicas gets 20
# samples, that is 2 or 3 classes. Build and compile the model inside `strategy.scope()`.

# %%
train = rl.datasets.load("digits", "train")
test = rl.datasets.load("digits", "test")
batches = rl.data.pk_batches(train, classes_per_batch=5, samples_per_class=8, seed=0)


def build_model():
    return models.build_embedding_model(input_shape=(8, 8, 1), embedding_dim=16)


with strategy.scope():
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=rl.AngularLoss(alpha=45, cross_replica=True))

# %% [markdown]
# ## What cross-replica mining changes
#
# On one global batch, the loss that the replicas compute together (`model.evaluate`
# under the strategy) equals the loss of one device on the whole batch with
# `cross_replica=True`, and differs from it with per-replica mining.

# %%
images, labels = next(iter(batches))
single_device = float(rl.AngularLoss(alpha=45)(labels, model(images)))
with strategy.scope():
    per_replica_model = build_model()
    per_replica_model.set_weights(model.get_weights())
    per_replica_model.compile(loss=rl.AngularLoss(alpha=45, cross_replica=False))
cross_replica = model.evaluate(images, labels, batch_size=len(labels), verbose=0)
per_replica = per_replica_model.evaluate(images, labels, batch_size=len(labels), verbose=0)
print(f"one device, global batch:         {single_device:.6f}")
print(f"{len(devices)} replicas, cross_replica=True:  {cross_replica:.6f}")
print(f"{len(devices)} replicas, cross_replica=False: {per_replica:.6f}")
np.testing.assert_allclose(cross_replica, single_device, rtol=1e-5)

# %% [markdown]
# ## Training
#
# `fit` is unchanged: the strategy splits the batches, the loss gathers them back for
# mining. Then the zero-shot check: the digits 5-9, never seen in training, retrieved by
# nearest neighbour (Recall@1, the query itself left out).

# %%
model.fit(batches, epochs=EPOCHS, steps_per_epoch=STEPS, shuffle=False, verbose=2)

test_images, test_labels = (np.concatenate(parts) for parts in zip(*test.batch(1024)))
embeddings = model.predict(test_images, verbose=0)
similarities = embeddings @ embeddings.T
np.fill_diagonal(similarities, -np.inf)
recall_at_1 = np.mean(test_labels[similarities.argmax(axis=1)] == test_labels)
print(f"zero-shot Recall@1 on digits 5-9: {recall_at_1:.3f}")
