"""Cars196 (cropped), frozen ImageNet EfficientNet-Lite0: which head, views and settings pay.

Every change to the frozen-feature protocol of benchmarks/cars196.py is
measured here, chosen on validation classes and only then run on the test
classes:

- views: the 224 x 224 crop as stored ("plain"), mirrored left-right
  ("flip"), or upsampled to ``--large`` pixels; a view's features are
  extracted once and cached (``backbone_features``, dataset id
  ``cars196:<root>:<split>:<view>``). Training may use several views of an
  image as separate samples of its class (feature-level augmentation);
  queries average the features of the test views before the head.
- head: ``linear`` (dense 1280 -> 512, the library's ``projection_head``) or
  ``mlp`` (dense 1280 -> hidden, ReLU, dropout, dense -> 512).
- loss and optimisation: N-pair mc (Sohn 2016) by default; learning rate and
  steps.

Selection: train on classes 1-73, score Recall@1 on classes 74-98 (2,000 or
so images, never the test classes). Final: train on 1-98, test on 99-196
(8,131 images), Recall@1/2/4/8, MAP@R, NMI, F1.

Writes benchmarks/results/cars196_recipe.json / .md (one line per run, with
settings, seed, wall time and the load).

Usage::

    python benchmarks/cars196_recipe.py --extract plain flip
    python benchmarks/cars196_recipe.py --variants linear mlp mlp_flip --stage validation
    python benchmarks/cars196_recipe.py --variants mlp_flip --stage test --seeds 0 1 2
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import losses
from rankloss_tf.data import pk_batches
from rankloss_tf.datasets import load
from rankloss_tf.evaluation import evaluate
from rankloss_tf.frozen_backbone import backbone_features

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cars196"
RESULTS = HERE / "results" / "cars196_recipe"
BACKBONE = "efficientnet_lite0"
TRAIN_CLASSES = 98  # labels 0..97 are classes 1-98
VALIDATION_FROM = 73  # labels 73..97 (classes 74-98) validate the choices


def _view_dataset(data_dir, split, view):
    images = load("cars196", split, data_dir=data_dir)
    if view.startswith("flip"):
        images = images.map(lambda image, label: (tf.image.flip_left_right(image), label))
    return images


def view_features(data_dir, split, view, cache_dir=None):
    """(features, labels) of one split seen through one view ("plain", "flip", "plain288", "flip288")."""
    size = int(view.lstrip("plainflip") or 224)
    return backbone_features(
        _view_dataset(data_dir, split, view), BACKBONE, size, "imagenet",
        dataset_id=f"cars196:{Path(data_dir).resolve()}:{split}:{view}", cache_dir=cache_dir,
    )


@dataclasses.dataclass(frozen=True)
class Variant:
    head: str = "linear"
    hidden: int = 1024
    dropout: float = 0.0
    train_views: tuple = ("plain",)
    test_views: tuple = ("plain",)
    loss: str = "npair"
    loss_options: tuple = (("variant", "mc"), ("l2_reg", 0.002))
    classes_per_batch: int = 64
    samples_per_class: int = 2
    embedding_dim: int = 512
    learning_rate: float = 1e-4
    steps: int = 2000
    cosine: bool = False  # cosine-decay the learning rate to 0 over the steps (as ``rankloss-tf train`` does)


VIEWS4 = ("plain", "flip", "plain288", "flip288")
FLIP = dict(train_views=("plain", "flip"), test_views=("plain", "flip"))
VARIANTS = {
    "linear": Variant(),
    "linear_lr3e-4": Variant(learning_rate=3e-4),
    "linear_flip": Variant(**FLIP),
    "linear_testflip": Variant(test_views=("plain", "flip")),
    "mlp": Variant(head="mlp"),
    "mlp_lr3e-4": Variant(head="mlp", learning_rate=3e-4),
    "mlp_flip": Variant(head="mlp", **FLIP),
    "mlp_flip_lr3e-4": Variant(head="mlp", learning_rate=3e-4, **FLIP),
    "mlp_flip_drop": Variant(head="mlp", dropout=0.3, learning_rate=3e-4, **FLIP),
    "mlp_flip_4k": Variant(head="mlp", learning_rate=3e-4, steps=4000, **FLIP),
    "linear_288": Variant(train_views=("plain288",), test_views=("plain288",)),
    "linear_flip_288": Variant(train_views=("plain", "flip", "plain288"), test_views=("plain", "flip", "plain288")),
    "linear_flip_4k": Variant(steps=4000, **FLIP),
    "linear_views4": Variant(train_views=("plain", "flip", "plain288", "flip288"),
                             test_views=("plain", "flip", "plain288", "flip288")),
    "linear_flip_lr3e-4": Variant(learning_rate=3e-4, **FLIP),
    "linear_views4_cosine": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True),
    "linear_views4_cosine_lr2e-4": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True, learning_rate=2e-4),
    "linear_views4_cosine_4k": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True, steps=4000),
    "linear_views4_cosine_lr2e-4_4k": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True,
                                              learning_rate=2e-4, steps=4000),
    "mlp_flip_288": Variant(head="mlp", learning_rate=3e-4, train_views=("plain288", "flip288"),
                            test_views=("plain288", "flip288")),
}


def build_head(variant, feature_dim):
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    if variant.head == "mlp":
        x = keras.layers.Dense(variant.hidden, activation="relu", name="hidden")(x)
        if variant.dropout:
            x = keras.layers.Dropout(variant.dropout)(x)
    elif variant.head != "linear":
        raise ValueError(f"`head` must be 'linear' or 'mlp'. Received: head={variant.head!r}")
    outputs = keras.layers.Dense(variant.embedding_dim, name="projection")(x)
    return keras.Model(inputs, outputs, name=f"{variant.head}_head")


def train_and_embed(variant, train, test, seed):
    """Trains a head on the train views' features; returns the embeddings of the averaged test views."""
    keras.utils.set_random_seed(seed)
    features = np.concatenate([train[view][0] for view in variant.train_views])
    labels = np.concatenate([train[view][1] for view in variant.train_views])
    head = build_head(variant, features.shape[1])
    learning_rate = variant.learning_rate
    if variant.cosine:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=variant.steps)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate),
                 loss=losses.get(variant.loss, **dict(variant.loss_options)))
    batches = pk_batches(features, labels, classes_per_batch=variant.classes_per_batch,
                         samples_per_class=variant.samples_per_class, seed=seed)
    head.fit(batches, epochs=1, steps_per_epoch=variant.steps, shuffle=False, verbose=0)
    queries = np.mean([test[view][0] for view in variant.test_views], axis=0)
    return head.predict(queries, batch_size=1024, verbose=0)


def _select(features_by_view, keep):
    return {view: (f[keep(l)], l[keep(l)]) for view, (f, l) in features_by_view.items()}


def run(variant, stage, seed, data_dir):
    views = sorted(set(variant.train_views) | set(variant.test_views))
    train_split = {view: view_features(data_dir, "train", view) for view in views}
    if stage == "validation":
        train = _select(train_split, lambda labels: labels < VALIDATION_FROM)
        test = _select(train_split, lambda labels: labels >= VALIDATION_FROM)
    else:
        train, test = train_split, {view: view_features(data_dir, "test", view) for view in variant.test_views}
    started, load_before = time.perf_counter(), os.getloadavg()
    embeddings = train_and_embed(variant, train, test, seed)
    seconds = time.perf_counter() - started
    labels = test[variant.test_views[0]][1]
    metrics = evaluate(embeddings, labels, clustering=stage == "test", seed=seed)
    return {"stage": stage, "variant": dataclasses.asdict(variant), "seed": seed, "metrics": metrics,
            "train_seconds": seconds, "load_before": load_before, "load_after": os.getloadavg()}


def write(records, results):
    json_path = results.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(records, indent=1) + "\n")
    default = dataclasses.asdict(Variant())
    lines = ["# Cars196 (cropped), frozen EfficientNet-Lite0: head, views and settings", "",
             "Validation: head trained on classes 1-73, Recall@1 on classes 74-98. Test: trained on 1-98, "
             "scored on 99-196. Views: plain = the stored 224 crop, flip = mirrored, 288 = upsampled to 288; "
             "test features are the mean over the test views. 2 shared CPU cores; load = 1-min average "
             "before / after.", "",
             "| stage | name | seed | R@1 | R@2 | R@4 | R@8 | MAP@R | NMI | F1 | head s | load | changes from linear |",
             "| --- " * 13 + "|"]
    for r in records:
        m = r["metrics"]
        changes = {k: v for k, v in r["variant"].items() if json.dumps(v) != json.dumps(default[k])}
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in
                 ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1")]
        lines.append(f"| {r['stage']} | {r['name']} | {r['seed']} | {' | '.join(cells)} | {r['train_seconds']:.0f} | "
                     f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f} | {changes or '-'} |")
    results.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extract", nargs="*", default=[], help="views to extract and cache")
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--stage", choices=("validation", "test"), default="validation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    results = Path(args.results)
    for view in args.extract:
        for split in ("train", "test"):
            started = time.perf_counter()
            features, _ = view_features(args.data_dir, split, view)
            print(f"{view} {split}: {features.shape} in {time.perf_counter() - started:.0f} s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    json_path = results.with_suffix(".json")
    records = json.loads(json_path.read_text()) if json_path.is_file() else []
    for name in args.variants:
        for seed in args.seeds:
            record = run(VARIANTS[name], args.stage, seed, args.data_dir)
            record["name"] = name
            records.append(record)
            write(records, results)
            print(name, seed, {k: round(v, 4) for k, v in record["metrics"].items()}, flush=True)


if __name__ == "__main__":
    main()
