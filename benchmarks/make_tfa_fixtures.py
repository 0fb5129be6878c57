"""Keras 2 ``.h5`` models compiled with tensorflow-addons 0.23 losses, for the load tests.

Run with the pinned TF 2.15 + tensorflow-addons interpreter that ``envs.py`` builds::

    .bench/venv-tfa/bin/python benchmarks/make_tfa_fixtures.py

Each fixture is a small model (Dense 6 -> 4) compiled with one tfa loss, given either
as an object with non-default arguments or as a registered ``Addons>`` name, trained for
one epoch and saved in the legacy HDF5 format with its optimizer. Beside the models,
``tests/fixtures/tfa/expected.json`` records, for each model, the loss that tfa itself
computes with the saved weights on a fixed batch (``model.evaluate``) and the loss
configuration tfa serialised. ``tests/test_compat_tfa_saved.py`` loads the models in
TF 2.21 after ``import rankloss_tf.compat.tfa`` and checks both.

Writes into ``tests/fixtures/tfa/`` only the files named below (each written to a
temporary name first, then renamed).
"""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_addons as tfa  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tfa"
BATCH, FEATURES, DIM = 12, 6, 4


def batch():
    """The fixed batch: 4 classes x 3 samples, float32 features."""
    rng = np.random.default_rng(13)
    features = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3).astype(np.int32)
    return features, labels


def fixtures():
    """`{file stem: loss given to compile}`."""
    return {
        "semihard_object": tfa.losses.TripletSemiHardLoss(margin=0.5, distance_metric="angular"),
        "hard_object": tfa.losses.TripletHardLoss(margin=0.3, soft=True, distance_metric="squared-L2"),
        "lifted_object": tfa.losses.LiftedStructLoss(margin=0.8),
        "semihard_name": "Addons>TripletSemiHardLoss",
        "semihard_function_name": "Addons>triplet_semihard_loss",
        "hard_function_name": "Addons>triplet_hard_loss",
        "lifted_function_name": "Addons>lifted_struct_loss",
    }


def build_model():
    tf.keras.utils.set_random_seed(7)
    return tf.keras.Sequential([tf.keras.Input((FEATURES,)), tf.keras.layers.Dense(DIM, name="embedding")])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    features, labels = batch()
    np.savez(OUT / "batch.npz.tmp.npz", features=features, labels=labels)
    os.replace(OUT / "batch.npz.tmp.npz", OUT / "batch.npz")
    expected = {"tensorflow": tf.__version__, "tensorflow_addons": tfa.__version__, "models": {}}
    for stem, loss in fixtures().items():
        model = build_model()
        model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss=loss)
        model.fit(features, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        temporary = OUT / f"{stem}.tmp.h5"
        model.save(temporary, save_format="h5")
        os.replace(temporary, OUT / f"{stem}.h5")
        config = tf.keras.losses.serialize(model.loss) if not isinstance(loss, str) else loss
        expected["models"][stem] = {
            "loss": float(model.evaluate(features, labels, batch_size=BATCH, verbose=0)),
            "loss_config": config,
        }
    text = json.dumps(expected, indent=2, sort_keys=True) + "\n"
    (OUT / "expected.json.tmp").write_text(text)
    os.replace(OUT / "expected.json.tmp", OUT / "expected.json")


if __name__ == "__main__":
    main()
