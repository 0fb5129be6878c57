"""Trained models on disk: load any of them, evaluate one on a dataset, export one.

A trained model reaches users in three forms: a run directory of ``train``
(its ``model.keras``), a ``.keras`` file, and an exported SavedModel. These
functions take any of them (through ``rankloss_tf.loading.load_model``) and
serve the ``evaluate`` and ``export`` commands.
"""

from pathlib import Path

import keras

from rankloss_tf import datasets
from rankloss_tf.app.limits import check_image_memory, evaluation_batch
from rankloss_tf.evaluation import KS, embed_dataset, evaluate, ks_within
from rankloss_tf.deploy import export, representative_images
from rankloss_tf.export import EMBEDDING_KIND, SavedModelEmbedder, check_export_path, check_separate
from rankloss_tf.images import model_image_shape
from rankloss_tf.io.atomic import check_writable
from rankloss_tf.loading import load_model
from rankloss_tf.app.split import recorded_split

__all__ = ["evaluate_model", "export_model"]
# Images per forward pass of `evaluate`: a joined model with several views runs the backbone once
# per view, and 256 images of EfficientNet-Lite0 at 288 x 4 views take over 14 GB of activations.



def evaluate_model(model_path, dataset, data_dir=None, split="test", ks=KS, clustering=True,
                   image_size=None, seed=0):
    """Evaluates a saved model on one split of a dataset.

    Args:
        model_path: anything ``load_model`` accepts.
        dataset: a ``datasets.load`` name.
        data_dir: local copy of the data.
        split: "test" (the held-out classes) or "train".
        ks: the K of Recall@K.
        clustering: also compute NMI and F1.
        image_size: side the images are resized to as they load (None: the
            model's input size when the dataset's images vary in size).
        seed: the folder split's seed (as given to ``train``) and k-means'.

    Returns:
        ``evaluate``'s metric dictionary.

    Raises:
        ValueError: bad paths or names, or images of another shape than the model's input.

    Example:
    >>> evaluate_model("runs/demo/saved_model", "digits")  # doctest: +SKIP
    {'recall@1': 0.94..., ...}
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"Data directory not found. Received: data_dir={data_dir!r}")
    check_image_memory(image_size, evaluation_batch(image_size))
    model = load_model(model_path)
    expected = model_image_shape(model, required=False) or (None, None, None)
    images = datasets.load(dataset, split, data_dir=data_dir, image_size=image_size, seed=seed)
    if image_size is None and not images.element_spec[0].shape.is_fully_defined() and expected[0]:
        images = datasets.load(dataset, split, data_dir=data_dir, image_size=expected[:2], seed=seed)
    got = tuple(images.element_spec[0].shape)
    if isinstance(model, keras.Model) and got != expected:
        raise ValueError(
            f"The model takes images of shape {expected}; dataset {dataset!r} has {got}. Pass --image-size or "
            f"use the exported SavedModel, which resizes. Received: model={model_path}, dataset={dataset!r}"
        )
    embeddings, labels = embed_dataset(model, images, batch_size=evaluation_batch(got))
    # A small held-out set scores the K it has (an explicit --ks beyond it is still refused by evaluate).
    ks = ks_within(len(labels)) if tuple(ks) == KS else ks
    return evaluate(embeddings, labels, ks=ks, clustering=clustering, seed=seed)


def export_model(model_path, export_dir, overwrite=False, format="saved_model", **options):
    """Exports a trained Keras model (``.keras`` file or run directory) to a deploy target.

    Args:
        model_path: a ``.keras`` file or a ``train`` run directory.
        export_dir: target directory (``saved_model``) or file (``.tflite``,
            ``.onnx``); see ``rankloss_tf.deploy.export``.
        overwrite: replace a previous export at ``export_dir``.
        format: ``"saved_model"``, ``"litert"`` or ``"onnx"``.
        **options: the format's options (``deploy.export``); ``representative``:
            ``(dataset, data_dir, seed)`` whose training images calibrate an
            int8 LiteRT export.

    Returns:
        ``Path`` of the export.

    Raises:
        ValueError: ``model_path`` is already an export; ``export_dir`` is equal
            to, inside or above the model, or holds anything but a previous export.

    Example:
    >>> export_model("runs/demo", "exported/demo", overwrite=True)  # doctest: +SKIP
    PosixPath('exported/demo')
    """
    model = load_model(model_path)
    if isinstance(model, SavedModelEmbedder):
        raise ValueError(f"`model` is already a SavedModel export. Received: {model_path}")
    protected = {"the model --model": model_path}
    if format == "saved_model":
        check_export_path(export_dir, overwrite, protected, role="--out", kind=EMBEDDING_KIND)
    else:
        check_separate(export_dir, "--out", protected)
    # a read-only place is named before the export is computed (a file target: its folder)
    check_writable(export_dir if format == "saved_model" else Path(export_dir).parent, "--out")
    representative = options.pop("representative", None)
    if representative is not None:
        dataset, data_dir, seed = representative
        options["representative_images"] = representative_images(dataset, model_image_shape(model), data_dir, seed=seed)
    if format == "saved_model":  # the run's held-out split travels with the export (evaluate reads it there)
        where, split = recorded_split(model_path)
        if where is not None and not isinstance(split, dict):
            raise ValueError(f"{where} is damaged: the model's split cannot be read. Received: --model={model_path}")
        options.setdefault("split", split)
    return export(model, export_dir, format=format, overwrite=overwrite, protected=protected, **options)
