"""Losses with trainable class parameters in Keras 3: the ClassCosines head the training model owns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import losses
from rankloss_tf.losses import ClassCosines, with_class_head

RNG = np.random.RandomState(7)


def _data(num_classes=4, size=64, dim=6):
    labels = np.arange(size) % num_classes
    centres = RNG.randn(num_classes, dim).astype(np.float32) * 3
    return (centres[labels] + RNG.randn(size, dim).astype(np.float32)), labels


def _models(num_classes=4, sub_centers=1):
    embedder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(5)], name="embedder")
    return embedder, with_class_head(embedder, num_classes, sub_centers=sub_centers)


@pytest.mark.parametrize("name, options", [("proxy_anchor", {}), ("proxy_nca", {}), ("arcface", {"sub_centers": 2}),
                                           ("cosface", {})])
def test_fit_trains_the_class_vectors_and_a_keras_file_keeps_them(name, options, tmp_path):
    features, labels = _data()
    loss = losses.get(name, **options)
    embedder, trained = _models(sub_centers=loss.sub_centers)
    trained.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    head = trained.get_layer("class_head")
    before = head.class_vectors.numpy().copy()
    history = trained.fit(features, labels, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(head.class_vectors.numpy(), before)  # the optimizer trained them
    path = str(tmp_path / "trained.keras")
    trained.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.get_layer("class_head").class_vectors.numpy(), head.class_vectors.numpy())
    np.testing.assert_allclose(loaded.predict(features, verbose=0), trained.predict(features, verbose=0), atol=1e-5)
    again = loaded.fit(features, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)  # continue training
    assert np.isfinite(again.history["loss"]).all()
    # The embedding model is the network alone: no class vectors in it, shared with the trained model.
    assert all("class_vectors" not in w.path for w in embedder.weights)
    assert embedder.output_shape == (None, 5)


def test_a_class_count_that_does_not_match_the_labels_is_a_clear_error():
    features, labels = _data(num_classes=5)
    _, trained = _models(num_classes=4)
    trained.compile(optimizer="adam", loss=losses.get("arcface"))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="num_classes"):
        trained.fit(features, labels, batch_size=16, epochs=1, verbose=0)


def test_class_cosines_layer_checks_and_serialises():
    with pytest.raises(ValueError, match="num_classes"):
        ClassCosines(0)
    with pytest.raises(ValueError, match="sub_centers"):
        ClassCosines(3, sub_centers=True)
    layer = ClassCosines(3, sub_centers=2, name="head")
    outputs = layer(tf.ones([2, 4]))
    assert outputs.shape == (2, 3) and layer.class_vectors.shape == (3, 2, 4)
    again = ClassCosines.from_config(layer.get_config())
    assert (again.num_classes, again.sub_centers) == (3, 2)
    assert ClassCosines(3)(tf.ones([2, 4], tf.bfloat16)).dtype == tf.float32  # float32 math under mixed precision
    with pytest.raises(ValueError, match="cross_replica"):
        losses.get("proxy_anchor", cross_replica=True)


def test_retrieval_evaluation_embeds_with_the_embedding_part_of_a_class_head_model():
    from rankloss_tf.evaluation import RetrievalEvaluation, evaluate
    from rankloss_tf.losses import embedding_part

    rng = np.random.RandomState(3)
    features, labels = rng.randn(60, 6).astype(np.float32), rng.randint(0, 6, 60)
    embedder, trained = _models(num_classes=6)
    assert embedding_part(trained) is embedder
    trained.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.get("cosface"))
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(30)
    callback = RetrievalEvaluation(dataset, ks=(1, 2), embedder=embedding_part(trained))
    logs = trained.fit(features, labels, batch_size=20, epochs=1, verbose=0, callbacks=[callback]).history
    want = evaluate(embedder.predict(features, verbose=0), labels, ks=(1, 2))
    on_cosines = evaluate(trained.predict(features, verbose=0), labels, ks=(1, 2))
    assert logs["val_recall@1"][0] == pytest.approx(want["recall@1"]) and logs["val_map@r"][0] == pytest.approx(want["map@r"])
    assert on_cosines["map@r"] != pytest.approx(want["map@r"])  # what the model being fit would have given
