"""A ``.keras`` file saved before the losses became a package loads after, with its losses.

``tests/fixtures/keras/losses_0_1.keras`` was written by ``write_fixture`` at commit e8ef703,
when the classes lived in ``rankloss_tf/losses.py`` and ``rankloss_tf/losses_modern.py``
(the file names those modules). Keras finds a class by its registered name,
``rankloss_tf>ClassName``, which must not change.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import rankloss_tf
from rankloss_tf import losses

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras"
SAVED = json.loads((FIXTURES / "losses_0_1.json").read_text())


def write_fixture(out):
    """Writes the fixture (run once, with the package of the layout to keep loading)."""
    from rankloss_tf.losses_modern import XBM, ArcFaceLoss, ClassCosines, MultiSimilarityLoss

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    embedding = keras.layers.Dense(3, name="embedding")(inputs)
    cosines = ClassCosines(3, name="class_head")(embedding)
    pairs = keras.layers.Identity(name="pairs")(embedding)
    model = keras.Model(inputs, [embedding, cosines, pairs], name="old_layout")
    model.compile(optimizer="sgd", loss=[XBM(MultiSimilarityLoss(alpha=3.0), memory_size=8, embedding_dim=3),
                                         ArcFaceLoss(margin=20.0, scale=16.0), losses.ContrastiveLoss(margin=0.5)])
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(6, 4)).astype("float32"), np.array([0, 0, 1, 1, 2, 2])
    values = model.evaluate(features, [labels] * 3, batch_size=6, verbose=0)
    model.save(Path(out) / "losses_0_1.keras")
    np.savez(Path(out) / "losses_0_1_batch.npz", features=features, labels=labels)
    saved = {"commit": "e8ef703", "evaluate": values, "losses": [keras.saving.serialize_keras_object(x) for x in model.loss]}
    (Path(out) / "losses_0_1.json").write_text(json.dumps(saved, indent=1))


def without_modules(config):
    """A serialized object's config without its ``module`` keys (the layout's, not the name's)."""
    if isinstance(config, dict):
        return {key: without_modules(value) for key, value in config.items() if key != "module"}
    return config


def test_keras_file_of_the_former_layout_loads_and_evaluates_the_same():
    assert {saved["module"] for saved in SAVED["losses"]} == {"rankloss_tf.losses", "rankloss_tf.losses_modern"}
    model = rankloss_tf.load_model(FIXTURES / "losses_0_1.keras")
    assert [type(loss) for loss in model.loss] == [losses.XBM, losses.ArcFaceLoss, losses.ContrastiveLoss]
    assert isinstance(model.get_layer("class_head"), losses.ClassCosines)
    now = [without_modules(keras.saving.serialize_keras_object(loss)) for loss in model.loss]
    assert now == [without_modules(saved) for saved in SAVED["losses"]]
    batch = np.load(FIXTURES / "losses_0_1_batch.npz")
    values = model.evaluate(batch["features"], [batch["labels"]] * 3, batch_size=6, verbose=0)
    assert values == pytest.approx(SAVED["evaluate"], rel=1e-5)


def test_registered_names_are_the_former_ones():
    classes = [*losses.registry().values(), losses.XBM, losses.ClassCosines]
    assert {keras.saving.get_registered_name(cls) for cls in classes} == {f"rankloss_tf>{cls.__name__}" for cls in classes}
    assert len(classes) == 15
