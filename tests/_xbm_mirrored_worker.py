"""XBM under a MirroredStrategy of two logical CPUs: prints the fit losses and each replica's queue (a subprocess:
logical devices must be set before TensorFlow starts)."""

import json

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from rankloss_tf.losses import XBM, SupConLoss  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    xbm = XBM(SupConLoss(), memory_size=12, embedding_dim=4)
    model.compile(optimizer="adam", loss=xbm)
rng = np.random.RandomState(0)
x, y = rng.randn(32, 6).astype("float32"), np.arange(32) % 4
history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
filled = [int(tf.reduce_sum(tf.cast(v, tf.int32))) for v in strategy.experimental_local_results(xbm._valid)]
first = [v.numpy()[0].tolist() for v in strategy.experimental_local_results(xbm._embeddings)]
print(json.dumps({"loss": history.history["loss"], "filled": filled, "distinct": first[0] != first[1]}))
