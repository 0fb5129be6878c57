"""Omniglot recipe search: settings chosen on validation alphabets, then one final test run.

The search never sees the test alphabets nor the official one-shot runs:
the five training alphabets are split into train classes (Balinese,
Early_Aramaic, Greek, Latin: 96 classes) and validation classes (Korean: 40
classes). A candidate is scored on the validation classes by Recall@1 and by
20-way one-shot accuracy over ``EPISODES`` random episodes (20 classes; one
image of each as support, another as query), the protocol of the official runs.

A candidate may turn every class by 90, 180 and 270 degrees into new classes
(``class_rotations=4``, ``rankloss_tf.data.augment.rotated_classes``) and
distort each batch by random affine maps before the model's resize
(``augment_batches`` with ``random_affine``), as ``rankloss-tf train`` does with
the recipe's ``class_rotations`` and ``augment``.

``--final NAME`` trains candidate NAME on all 136 training classes, then
reports test Recall@1 (106 classes) and the accuracy on the 20 official
one-shot runs of its model, with the wall time of training and the load.

Every run appends to benchmarks/results/omniglot_recipe.json (settings, seed,
metrics, seconds, load) and rewrites omniglot_recipe.md.

Usage::

    python benchmarks/omniglot_recipe.py --candidates baseline affine      # validation runs
    python benchmarks/omniglot_recipe.py --final affine --seed 0           # test + one-shot
"""

import argparse
import dataclasses
import functools
import json
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import datasets, losses
from rankloss_tf.data.augment import augment_batches, random_affine, rotated_classes
from rankloss_tf.datasets import omniglot
from rankloss_tf.evaluation import OneShotRun, evaluate, one_shot_accuracy
from rankloss_tf.models import build_embedding_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import machine, results as results_file  # noqa: E402
from harness.training import fit  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "omniglot"
RESULTS = HERE / "results" / "omniglot_recipe"
VALIDATION_ALPHABETS = ("Korean",)
EPISODES = 200


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One candidate: model, batches, optimisation, loss and augmentation."""

    image_size: int = 32
    embedding_dim: int = 128
    classes_per_batch: int = 32
    samples_per_class: int = 4
    steps: int = 840  # 40 epochs x 21 batches (the first default; the recipe is now 80 epochs)
    learning_rate: float = 1e-3
    loss: str = "npair_angular"
    loss_options: tuple = ()
    rotation: float = 0.0  # augmentation off when all four are 0
    shear: float = 0.0
    scale: tuple = (1.0, 1.0)
    translation: float = 0.0
    class_rotations: int = 1  # 4: each class turned by 90, 180, 270 degrees is a new class

    @property
    def augmented(self):
        return (self.rotation, self.shear, self.scale, self.translation) != (0.0, 0.0, (1.0, 1.0), 0.0)


KOCH = dict(rotation=10.0, shear=0.3, scale=(0.8, 1.2), translation=2.0)
STRONG = dict(rotation=15.0, shear=0.3, scale=(0.8, 1.2), translation=6.0)
CANDIDATES = {
    "baseline": Recipe(),
    "affine": Recipe(**KOCH),
    "affine_2x": Recipe(steps=1680, **KOCH),
    "affine_lr3": Recipe(learning_rate=3e-3, **KOCH),
    "affine_28": Recipe(image_size=28, **KOCH),
    "affine_40": Recipe(image_size=40, **KOCH),
    "affine_strong": Recipe(rotation=15.0, shear=0.3, scale=(0.8, 1.2), translation=6.0),
    "affine_strong_lr3": Recipe(learning_rate=3e-3, rotation=15.0, shear=0.3, scale=(0.8, 1.2), translation=6.0),
    "affine_semihard": Recipe(loss="triplet_semihard", loss_options=(("margin", 0.2), ("distance", "cosine")), **KOCH),
    "affine_npair": Recipe(loss="npair", classes_per_batch=64, samples_per_class=2, **KOCH),
    "affine_p64k2": Recipe(classes_per_batch=64, samples_per_class=2, **KOCH),
    "rot4_strong_lr3": Recipe(learning_rate=3e-3, class_rotations=4, **STRONG),
    "rot4_p64k2": Recipe(learning_rate=3e-3, class_rotations=4, classes_per_batch=64, samples_per_class=2, **STRONG),
    "rot4_1260": Recipe(learning_rate=3e-3, class_rotations=4, steps=1260, **STRONG),
    "rot4_48": Recipe(learning_rate=3e-3, class_rotations=4, image_size=48, **STRONG),
    "rot4_lr6": Recipe(learning_rate=6e-3, class_rotations=4, **STRONG),
    "rot4_alpha36": Recipe(learning_rate=3e-3, class_rotations=4, loss_options=(("alpha", 36.0),), **STRONG),
    "rot4_d64": Recipe(learning_rate=3e-3, class_rotations=4, embedding_dim=64, **STRONG),
    "rot4_1680": Recipe(learning_rate=3e-3, class_rotations=4, steps=1680, **STRONG),
    "rot4_2100": Recipe(learning_rate=3e-3, class_rotations=4, steps=2100, **STRONG),
    "rot4_40_1260": Recipe(learning_rate=3e-3, class_rotations=4, image_size=40, steps=1260, **STRONG),
    "rot4_48_1050": Recipe(learning_rate=3e-3, class_rotations=4, image_size=48, steps=1050, **STRONG),
    # angular's best setting in results/fair_comparison_omniglot.json (alpha 41.5, lr 0.00269, K 2)
    "rot4_angular_1680": Recipe(learning_rate=2.69e-3, class_rotations=4, steps=1680, loss="angular",
                           loss_options=(("alpha", 41.5),), classes_per_batch=64, samples_per_class=2, **STRONG),
}


def class_alphabets(data_dir):
    """Alphabet of every label (labels = ranks of the sorted 'Alphabet/characterNN' names)."""
    names = set()
    for zip_name in omniglot.ZIPS:
        with zipfile.ZipFile(Path(data_dir) / zip_name) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if member.endswith(".png"):
                    names.add(f"{parts[1]}/{parts[2]}")
    return np.array([name.split("/")[0] for name in sorted(names)])


def arrays(split, data_dir):
    images, labels = zip(*datasets.load("omniglot", split, data_dir=data_dir).as_numpy_iterator())
    return np.stack(images), np.array(labels)


def train_model(recipe, images, labels, seed):
    """Trains a small-CNN embedding model on (images, labels) with ``recipe``; returns it."""

    def build():
        return build_embedding_model(images.shape[1:], embedding_dim=recipe.embedding_dim,
                                     image_size=(recipe.image_size,) * 2)

    def augmented(batches):
        augment = functools.partial(random_affine, rotation=recipe.rotation, shear=recipe.shear,
                                    scale=recipe.scale, translation=recipe.translation)
        return augment_batches(batches, augment, seed=seed)

    examples = rotated_classes(tf.data.Dataset.from_tensor_slices((images, labels)), recipe.class_rotations)
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=recipe.steps)
    return fit(build, losses.get(recipe.loss, **dict(recipe.loss_options)), examples, None,
               learning_rate=schedule, steps=recipe.steps, classes_per_batch=recipe.classes_per_batch,
               samples_per_class=recipe.samples_per_class, seed=seed,
               batches=augmented if recipe.augmented else None)


def episodes(images, labels, count, ways=20, seed=0):
    """Random N-way one-shot episodes from labelled images: one support and one query per class."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    runs = []
    for e in range(count):
        chosen = rng.choice(classes, ways, replace=False)
        pairs = [rng.choice(np.flatnonzero(labels == c), 2, replace=False) for c in chosen]
        order = rng.permutation(ways)
        runs.append(OneShotRun(
            name=f"episode{e:03d}",
            support=images[[p[0] for p in pairs]],
            queries=images[[pairs[i][1] for i in order]],
            targets=order,
        ))
    return runs


def validate(name, recipe, seed, data_dir):
    images, labels = arrays("train", data_dir)
    alphabets = class_alphabets(data_dir)[labels]
    held = np.isin(alphabets, VALIDATION_ALPHABETS)
    watch = machine.Stopwatch()
    model = train_model(recipe, images[~held], labels[~held], seed)
    timing = watch.record()
    embeddings = model.predict(images[held], batch_size=256, verbose=0)
    metrics = evaluate(embeddings, labels[held], clustering=False)
    metrics["one_shot"] = one_shot_accuracy(model, episodes(images[held], labels[held], EPISODES, seed=seed))["accuracy"]
    return {"stage": "validation", "name": name, "recipe": dataclasses.asdict(recipe), "seed": seed,
            "validation_alphabets": list(VALIDATION_ALPHABETS), "episodes": EPISODES, "metrics": metrics,
            "train_seconds": timing["seconds"], "load_before": timing["load_before"], "load_after": machine.load()}


def final(name, recipe, seed, data_dir, export_dir=None):
    images, labels = arrays("train", data_dir)
    test_images, test_labels = arrays("test", data_dir)
    watch = machine.Stopwatch()
    model = train_model(recipe, images, labels, seed)
    timing = watch.record()
    metrics = evaluate(model.predict(test_images, batch_size=256, verbose=0), test_labels, seed=seed)
    runs = Path(data_dir) / "all_runs.zip"
    one_shot = one_shot_accuracy(model, runs)
    if export_dir:
        from rankloss_tf.export import SavedModelEmbedder, export_saved_model

        export_saved_model(model, export_dir, overwrite=True)
        metrics["one_shot_exported"] = one_shot_accuracy(SavedModelEmbedder(export_dir), runs)["accuracy"]
    metrics["one_shot"] = one_shot["accuracy"]
    return {"stage": "final", "name": name, "recipe": dataclasses.asdict(recipe), "seed": seed,
            "metrics": metrics, "one_shot_runs": one_shot["runs"], "train_seconds": timing["seconds"],
            "load_before": timing["load_before"], "load_after": machine.load()}


def markdown(records):
    lines = ["# Omniglot recipe search", "",
             f"Validation: train on 96 classes (Balinese, Early_Aramaic, Greek, Latin), score on "
             f"{', '.join(VALIDATION_ALPHABETS)} (40 classes): Recall@1 and 20-way one-shot over "
             f"{EPISODES} random episodes. Final: all 136 training classes; test Recall@1 on 106 classes "
             "and the 20 official one-shot runs. 2 shared CPU cores; load = 1-min load average before / after.",
             "", "| stage | name | seed | R@1 | one-shot | train s | load | settings |", "| --- " * 8 + "|"]
    default = dataclasses.asdict(Recipe())
    for r in records:
        recipe = {k: v for k, v in r["recipe"].items() if json.dumps(v) != json.dumps(default[k])}
        lines.append(f"| {r['stage']} | {r['name']} | {r['seed']} | {r['metrics']['recall@1']:.3f} | "
                     f"{r['metrics']['one_shot']:.3f} | {r['train_seconds']:.0f} | "
                     f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f} | {recipe or 'defaults'} |")
    return "\n".join(lines) + "\n"


def write(record, results=RESULTS):
    records = results_file.read(results, []) + [record]
    results_file.write(results, records, markdown(records))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", nargs="*", default=[], choices=sorted(CANDIDATES))
    parser.add_argument("--final", choices=sorted(CANDIDATES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="override the candidates' steps (smoke runs)")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--export-dir")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    results = Path(args.results)

    def chosen(name):
        recipe = CANDIDATES[name]
        return dataclasses.replace(recipe, steps=args.steps) if args.steps else recipe

    for name in args.candidates:
        write(validate(name, chosen(name), args.seed, args.data_dir), results)
    if args.final:
        write(final(args.final, chosen(args.final), args.seed, args.data_dir, args.export_dir), results)


if __name__ == "__main__":
    main()
