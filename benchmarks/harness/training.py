"""Training for the benchmarks: frozen features through the application's protocol, one P x K loop for arrays.

``frozen_features`` asks ``rankloss_tf.app.protocols.FrozenFeatures`` (the
protocol ``rankloss-tf train`` runs) for a split's features of each view, so a
benchmark and the command line read and fill one feature cache.

``fit`` is the one training loop of the scripts that train many small models
on in-memory arrays (tuning, recipe searches, loss tables): the seed first,
then the model, Adam, P x K batches seeded alike, ``steps`` steps; a loss that
trains one vector per class (``loss.class_head``: proxies, ArcFace / CosFace
weights) trains through ``with_class_head`` and the embedding model alone is
returned.
"""

import keras
import numpy as np

from rankloss_tf import datasets
from rankloss_tf.app.config import TrainConfig
from rankloss_tf.app.protocols import protocol
from rankloss_tf.data import pk_batches
from rankloss_tf.losses_modern import with_class_head

__all__ = ["fit", "frozen_features"]


def frozen_features(dataset, data_dir, split, view_sizes=None, mirror_views=None, cache_dir=None, pooling=None,
                    gem_power=None):
    """``{view name: (features [N, F], labels [N])}`` of one split, as ``rankloss-tf train`` computes them.

    Args:
        dataset: a dataset name whose recipe (or ``--backbone``) is a pretrained backbone ("cars196").
        data_dir: the local copy of the data.
        split: "train" or "test".
        view_sizes, mirror_views: the views (None: the recipe's); names as in the feature cache:
            "plain", "flip", "plain288", "flip288" for sizes (224, 288) mirrored.
        cache_dir: the feature cache (None: the default one).
        pooling, gem_power: the pooling of the backbone's last feature map (None: the recipe's; see ``TrainConfig``).
    """
    config = TrainConfig(dataset=dataset, data_dir=str(data_dir), view_sizes=view_sizes, mirror_views=mirror_views,
                         cache_dir=cache_dir, pooling=pooling, gem_power=gem_power, verbose=0).resolved()
    images = datasets.load(dataset, split, data_dir=config.data_dir, seed=config.seed)
    method = protocol(config, images.element_spec[0].shape)
    return {view.name(config.image_size): arrays
            for view, arrays in zip(method.views, method.view_features(images, split))}


def fit(build, loss, inputs, labels, *, learning_rate, steps, classes_per_batch, samples_per_class, seed,
        batches=None):
    """Trains the model ``build()`` returns on P x K batches of ``(inputs, labels)``; returns that model.

    Args:
        build: makes the embedding model (called after the seed is set, so its weights follow ``seed``).
        loss: a ``keras.losses.Loss``; one with ``class_head`` trains through ``with_class_head``: with
            arrays, one class vector per distinct label (numbered in sorted order); with a dataset, one per
            id 0 .. the largest label.
        inputs, labels: the training examples (NumPy arrays) or a ``tf.data.Dataset`` of pairs with
            ``labels=None`` (as ``pk_batches`` takes them).
        learning_rate: Adam's learning rate (a float or a schedule).
        steps: training steps (batches).
        classes_per_batch, samples_per_class: P and K.
        seed: the global Keras seed and the sampler's.
        batches: a function mapping the P x K batches to the batches trained on (augmentation), or None.
    """
    keras.utils.set_random_seed(seed)
    model = build()
    trained = model
    if getattr(loss, "class_head", False):
        if labels is None:
            count = 1 + max(inputs.map(lambda example, label: label).as_numpy_iterator())
        else:
            classes, labels = np.unique(np.asarray(labels), return_inverse=True)
            count = len(classes)
        trained = with_class_head(model, int(count), **loss.head_options())
    trained.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    stream = pk_batches(inputs, labels, classes_per_batch=classes_per_batch, samples_per_class=samples_per_class,
                        seed=seed)
    trained.fit(stream if batches is None else batches(stream), epochs=1, steps_per_epoch=steps, shuffle=False,
                verbose=0)
    return model
