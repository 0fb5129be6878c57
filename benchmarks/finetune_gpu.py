"""Fine-tune EfficientNet-Lite0 end to end on Cars196 (cropped), meant for one GPU in < 5 minutes.

The photo recipe of ``--fine-tune`` (``rankloss_tf.app.recipes.FINE_TUNE``,
``rankloss_tf.fine_tune``): P x K batches (N-pair batches, 64 classes x 2) of the
training classes 1-98, each batch augmented by ``random_resized_crop_flip``
(area 0.25-1, aspect 3/4-4/3, mirror 1/2) inside the input pipeline; the
ImageNet EfficientNet-Lite0 backbone trains with its batch-norm statistics
frozen (its BatchNormalization layers run in inference mode, the usual choice
for small fine-grained batches) and a lower learning rate than the new
embedding head (``--backbone-lr-scale``); Adam with a linear warm-up and cosine
decay; N-pair mc loss (Sohn 2016) on the raw 512-d outputs. Then the test
classes 99-196 are embedded (L2-normalised) and scored: Recall@1/2/4/8,
MAP@R (and NMI, F1 with ``--clustering``).

The training images are decoded once into memory (8,054 x 224 x 224 x 3
uint8, 1.2 GB). Mixed precision (``mixed_float16``) and XLA are used on a GPU.

Writes benchmarks/results/finetune_gpu.{json,md} (``--smoke``: .bench/).
Why its own ``model.fit`` and not ``harness.training.fit`` or the app's runner
(issue 26): ``fit`` compiles plain Adam with Keras's default ``jit_compile``,
while this run measures ``BackboneRateAdam`` (the backbone at
``--backbone-lr-scale``), batch-norm statistics frozen after the build, XLA
forced on a GPU and mixed precision; the runner trains from run directories
(checkpoints, callbacks, the feature pipeline) whose I/O would enter the timed
training. Training through ``fit`` needs it to take an optimizer, a function
applied to the built model and ``jit_compile``, and a GPU rerun that shows the
same figures.

``--smoke`` runs a tiny CPU check instead: the digits dataset tiled to RGB at
32 x 32, random weights, a few steps; it proves the pipeline, not a figure.

Usage::

    python benchmarks/finetune_gpu.py --steps 1500            # on a GPU
    python benchmarks/finetune_gpu.py --smoke                 # a minute on a CPU
"""

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import datasets, losses
from rankloss_tf.data import pk_batches
from rankloss_tf.data.augment import augment_batches, batch_augmentation
from rankloss_tf.app.recipes import FINE_TUNE
from rankloss_tf.evaluation import evaluate
from rankloss_tf.models import build_embedding_model
from rankloss_tf.fine_tune import BackboneRateAdam, freeze_batch_norm

from harness import machine, results as results_file

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cars196"


def warmup_cosine(learning_rate, steps, warmup):
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup
    )


def arrays(name, split, data_dir, limit_classes=None):
    images, labels = zip(*datasets.load(name, split, data_dir=data_dir).as_numpy_iterator())
    images, labels = np.stack(images), np.array(labels)
    if limit_classes:
        keep = np.isin(labels, np.unique(labels)[:limit_classes])
        images, labels = images[keep], labels[keep]
    return images, labels


def run(args):
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    if on_gpu:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(args.seed)
    started = time.perf_counter()
    train_images, train_labels = arrays(args.dataset, "train", args.data_dir, args.limit_classes)
    test_images, test_labels = arrays(args.dataset, "test", args.data_dir, args.limit_classes)
    loaded = time.perf_counter()
    model = build_embedding_model(
        train_images.shape[1:], embedding_dim=args.embedding_dim, backbone="efficientnet_lite0",
        image_size=(args.image_size, args.image_size), weights=args.weights, normalize=False,
    )
    frozen = freeze_batch_norm(model)
    optimizer = BackboneRateAdam(args.backbone_lr_scale,
                                 learning_rate=warmup_cosine(args.learning_rate, args.steps, args.warmup))
    model.compile(optimizer=optimizer, loss=losses.get("npair", variant="mc", l2_reg=0.002),
                  jit_compile=on_gpu)
    batches = pk_batches(train_images, train_labels, classes_per_batch=args.classes_per_batch,
                         samples_per_class=2, seed=args.seed)
    batches = augment_batches(batches, batch_augmentation(FINE_TUNE["augment"]), seed=args.seed)
    model.fit(batches, epochs=1, steps_per_epoch=args.steps, shuffle=False, verbose=2 if args.verbose else 0)
    trained = time.perf_counter()
    embeddings = model.predict(test_images, batch_size=256, verbose=0).astype(np.float32)
    metrics = evaluate(embeddings, test_labels, clustering=args.clustering, seed=args.seed)
    finished = time.perf_counter()
    device = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get(
        "device_name", "GPU") if on_gpu else f"CPU x {os.cpu_count()}"
    return {
        "metrics": metrics,
        "seconds": {"load": loaded - started, "train": trained - loaded, "evaluate": finished - trained,
                    "total": finished - started},
        "device": device, "frozen_batch_norm_layers": frozen, "load_average": machine.load(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("data_dir", "verbose")},
        "platform": machine.describe()["platform"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cars196")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="head learning rate")
    parser.add_argument("--backbone-lr-scale", type=float, default=FINE_TUNE["backbone_lr_scale"])
    parser.add_argument("--classes-per-batch", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--limit-classes", type=int, help="keep only the first N classes of each split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clustering", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run on digits (proves the pipeline)")
    parser.add_argument("--out", help="results path without suffix")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dataset, args.data_dir, args.steps, args.warmup = "digits", None, 3, 1
        args.classes_per_batch, args.image_size, args.weights, args.embedding_dim = 4, 32, None, 16
    out = Path(args.out) if args.out else (HERE.parent / ".bench" if args.smoke else HERE / "results") / "finetune_gpu"
    record = run(args)
    m, s = record["metrics"], record["seconds"]
    page = (
        "# Fine-tuning EfficientNet-Lite0 on Cars196 (cropped), photo recipe\n\n"
        f"Device: {record['device']}. {args.steps} steps of {args.classes_per_batch} x 2 images at "
        f"{args.image_size} px, random resized crop + flip, frozen batch-norm statistics, backbone learning "
        f"rate x {args.backbone_lr_scale}, N-pair mc.\n\n"
        "| R@1 | R@2 | R@4 | R@8 | MAP@R | train s | total s |\n| --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {m['recall@1']:.3f} | {m['recall@2']:.3f} | {m['recall@4']:.3f} | {m['recall@8']:.3f} | "
        f"{m['map@r']:.3f} | {s['train']:.0f} | {s['total']:.0f} |\n"
    )
    results_file.write(out, record, page)
    print(json.dumps({"metrics": m, "seconds": s, "device": record["device"]}), flush=True)


if __name__ == "__main__":
    main()
