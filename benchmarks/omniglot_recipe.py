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
    python benchmarks/omniglot_recipe.py --candidates recipe --save-dir models  # keep the validation models
    python benchmarks/omniglot_recipe.py --shifts models/recipe_seed0.keras --stage validation --seed 0
    python benchmarks/omniglot_recipe.py --shifts RUN --stage final --seed 0  # a CLI run on the official runs
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
from rankloss_tf.app import recipes
from rankloss_tf.app.recipes import Recipe
from rankloss_tf.data.augment import CHARACTER_AFFINE, augment_batches, random_affine, rotated_classes
from rankloss_tf.datasets import omniglot
from rankloss_tf.evaluation import OneShotRun, evaluate, load_one_shot_runs, one_shot_accuracy
from rankloss_tf.models import build_embedding_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import machine, results as results_file  # noqa: E402
from harness.training import fit  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "omniglot"
RESULTS = HERE / "results" / "omniglot_recipe"
VALIDATION_ALPHABETS = ("Korean",)
EPISODES = 200
SHIFTS = (0, 2, 3, 4, 6, 8, 10)
SHIFTED = f"one_shot_shift{recipes.ONE_SHOT_SHIFT}"  # the one-shot accuracy at the recipe's test-time shift  # the test-time shifts (px of the 105 px images) ``--shifts`` scores


STEPS_PER_EPOCH = 21  # batches of an epoch of the search (a recipe's epochs x 21 = its steps)
NO_AFFINE = dict(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translation=0.0)
KOCH = dict(rotation=10.0, shear=0.3, scale=(0.8, 1.2), translation=2.0)  # the search's first affine ranges
STRONG = CHARACTER_AFFINE  # the app's "affine": 15 degrees, 6 px
ROT4 = dict(learning_rate=3e-3, class_rotations=4)
# The baseline: the first Omniglot recipe (40 epochs, lr 1e-3, no augmentation), in the app's Recipe.
BASE = Recipe(image_size=32, classes_per_batch=32, samples_per_class=4, epochs=40, embedding_dim=128,
              learning_rate=1e-3)


def candidate(affine=None, **changes):
    """``(app Recipe, affine ranges)``: ``BASE`` with ``changes``, augmented by ``affine`` ranges (None: none)."""
    return dataclasses.replace(BASE, augment="none" if affine is None else "affine", **changes), affine


CANDIDATES = {
    "baseline": candidate(),
    "affine": candidate(KOCH),
    "affine_2x": candidate(KOCH, epochs=80),
    "affine_lr3": candidate(KOCH, learning_rate=3e-3),
    "affine_28": candidate(KOCH, image_size=28),
    "affine_40": candidate(KOCH, image_size=40),
    "affine_strong": candidate(STRONG),
    "affine_strong_lr3": candidate(STRONG, learning_rate=3e-3),
    "affine_semihard": candidate(KOCH, loss="triplet_semihard", loss_options={"margin": 0.2, "distance": "cosine"}),
    "affine_npair": candidate(KOCH, loss="npair", classes_per_batch=64, samples_per_class=2),
    "affine_p64k2": candidate(KOCH, classes_per_batch=64, samples_per_class=2),
    "rot4_strong_lr3": candidate(STRONG, **ROT4),
    "rot4_p64k2": candidate(STRONG, classes_per_batch=64, samples_per_class=2, **ROT4),
    "rot4_1260": candidate(STRONG, epochs=60, **ROT4),
    "rot4_48": candidate(STRONG, image_size=48, **ROT4),
    "rot4_lr6": candidate(STRONG, learning_rate=6e-3, class_rotations=4),
    "rot4_alpha36": candidate(STRONG, loss_options={"alpha": 36.0}, **ROT4),
    "rot4_d64": candidate(STRONG, embedding_dim=64, **ROT4),
    "rot4_1680": candidate(STRONG, epochs=80, **ROT4),  # the app's Omniglot recipe until multi-similarity
    "recipe": (recipes.recipe("omniglot"), STRONG),  # the app's Omniglot (and small_grey) recipe
    "rot4_2100": candidate(STRONG, epochs=100, **ROT4),
    "rot4_40_1260": candidate(STRONG, image_size=40, epochs=60, **ROT4),
    "rot4_48_1050": candidate(STRONG, image_size=48, epochs=50, **ROT4),
    # angular's best setting in results/fair_comparison_omniglot.json (alpha 41.5, lr 0.00269, K 2)
    "rot4_angular_1680": candidate(STRONG, learning_rate=2.69e-3, class_rotations=4, epochs=80, loss="angular",
                                   loss_options={"alpha": 41.5}, classes_per_batch=64, samples_per_class=2),
    # multi-similarity's best setting in results/fair_comparison_omniglot.json (alpha 2.39, beta 39, base 0.432, K 4)
    "rot4_ms_1680": candidate(STRONG, epochs=80, loss="multi_similarity",
                              loss_options={"alpha": 2.39, "beta": 39.0, "base": 0.432}, **ROT4),
    "rot4_supcon_1680": candidate(STRONG, epochs=80, loss="supcon", loss_options={"temperature": 0.1}, **ROT4),
    # The tuned comparison's validation winners among today's losses (results/fair_comparison_omniglot.json: cosface
    # 71.4, arcface 70.5 against npair_angular 70.4): their best settings (lr 0.00161, K 8) at the recipe's length.
    "rot4_cosface_1680": candidate(STRONG, learning_rate=1.61e-3, class_rotations=4, epochs=80, loss="cosface",
                                   loss_options={"margin": 0.32, "scale": 35.4}, classes_per_batch=16,
                                   samples_per_class=8),
    "rot4_arcface_1680": candidate(STRONG, learning_rate=1.61e-3, class_rotations=4, epochs=80, loss="arcface",
                                   loss_options={"margin": 29.2, "scale": 35.4}, classes_per_batch=16,
                                   samples_per_class=8),
}


def settings(recipe, affine, steps=None):
    """A candidate's settings as its results record keeps them (flat, the keys of the records written so far).

    Args:
        recipe, affine: a ``CANDIDATES`` value.
        steps: training steps (None: the recipe's epochs x ``STEPS_PER_EPOCH``).
    """
    return {"image_size": recipe.image_size, "embedding_dim": recipe.embedding_dim,
            "classes_per_batch": recipe.classes_per_batch, "samples_per_class": recipe.samples_per_class,
            "steps": steps or recipe.epochs * STEPS_PER_EPOCH, "learning_rate": recipe.learning_rate,
            "loss": recipe.loss, "loss_options": tuple((recipe.loss_options or {}).items()),
            **(NO_AFFINE if recipe.augment == "none" else affine), "class_rotations": recipe.class_rotations}


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
    """Trains a small-CNN embedding model on (images, labels) with ``recipe`` (``settings``); returns it."""

    def build():
        return build_embedding_model(images.shape[1:], embedding_dim=recipe["embedding_dim"],
                                     image_size=(recipe["image_size"],) * 2)

    def augmented(batches):
        augment = functools.partial(random_affine, **{key: recipe[key] for key in NO_AFFINE})
        return augment_batches(batches, augment, seed=seed)

    examples = rotated_classes(tf.data.Dataset.from_tensor_slices((images, labels)), recipe["class_rotations"])
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], decay_steps=recipe["steps"])
    augmenting = any(json.dumps(recipe[key]) != json.dumps(value) for key, value in NO_AFFINE.items())
    return fit(build, losses.get(recipe["loss"], **dict(recipe["loss_options"])), examples, None,
               learning_rate=schedule, steps=recipe["steps"], classes_per_batch=recipe["classes_per_batch"],
               samples_per_class=recipe["samples_per_class"], seed=seed, batches=augmented if augmenting else None)


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


def validate(name, recipe, seed, data_dir, save_dir=None):
    images, labels = arrays("train", data_dir)
    alphabets = class_alphabets(data_dir)[labels]
    held = np.isin(alphabets, VALIDATION_ALPHABETS)
    watch = machine.Stopwatch()
    model = train_model(recipe, images[~held], labels[~held], seed)
    timing = watch.record()
    if save_dir:
        model.save(Path(save_dir) / f"{name}_seed{seed}.keras")
    embeddings = model.predict(images[held], batch_size=256, verbose=0)
    metrics = evaluate(embeddings, labels[held], clustering=False)
    runs = episodes(images[held], labels[held], EPISODES, seed=seed)
    metrics["one_shot"] = one_shot_accuracy(model, runs)["accuracy"]
    metrics[SHIFTED] = one_shot_accuracy(model, runs, shift=recipes.ONE_SHOT_SHIFT)["accuracy"]
    return {"stage": "validation", "name": name, "recipe": recipe, "seed": seed,
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
    metrics[SHIFTED] = one_shot_accuracy(model, runs, shift=recipes.ONE_SHOT_SHIFT)["accuracy"]
    return {"stage": "final", "name": name, "recipe": recipe, "seed": seed,
            "metrics": metrics, "one_shot_runs": one_shot["runs"], "train_seconds": timing["seconds"],
            "load_before": timing["load_before"], "load_after": machine.load()}


def shifts(model_path, stage, seed, data_dir, name=None):
    """One-shot accuracy of a saved model at every test-time shift of ``SHIFTS`` (``one_shot_accuracy(shift=)``).

    Args:
        model_path: a model ``load_model`` reads (a validation model of ``--save-dir``, a CLI run).
        stage: "validation" (the Korean episodes of seed ``seed``, as ``validate``) or "final" (the official runs).
        seed: the model's seed (validation: the episodes' seed).
        name: the row's name (None: the model's file or folder name).
    """
    from rankloss_tf.loading import load_model

    model = load_model(model_path)
    if stage == "validation":
        images, labels = arrays("train", data_dir)
        held = np.isin(class_alphabets(data_dir)[labels], VALIDATION_ALPHABETS)
        runs = episodes(images[held], labels[held], EPISODES, seed=seed)
    else:
        runs = load_one_shot_runs(Path(data_dir) / "all_runs.zip")
    accuracy = {str(shift): one_shot_accuracy(model, runs, shift=shift)["accuracy"] for shift in SHIFTS}
    return {"stage": f"{stage} shifts", "name": name or Path(model_path).stem, "seed": seed, "model": str(model_path),
            "one_shot_by_shift": accuracy, "load": machine.load()}


def shifted_cell(record):
    """The record's one-shot accuracy at the recipe's shift, as the page shows it ("-": not measured)."""
    value = record["metrics"].get(SHIFTED)
    return "-" if value is None else f"{value:.3f}"


def markdown(records):
    lines = ["# Omniglot recipe search", "",
             f"Validation: train on 96 classes (Balinese, Early_Aramaic, Greek, Latin), score on "
             f"{', '.join(VALIDATION_ALPHABETS)} (40 classes): Recall@1 and 20-way one-shot over "
             f"{EPISODES} random episodes. Final: all 136 training classes; test Recall@1 on 106 classes "
             "and the 20 official one-shot runs. 2 shared CPU cores; load = 1-min load average before / after.",
             "", f"| stage | name | seed | R@1 | one-shot | one-shot, shift {recipes.ONE_SHOT_SHIFT} | train s | load "
             "| settings |", "| --- " * 9 + "|"]
    default = settings(*CANDIDATES["baseline"])
    shifted = [r for r in records if "one_shot_by_shift" in r]
    for r in (r for r in records if "one_shot_by_shift" not in r):
        recipe = {k: v for k, v in r["recipe"].items() if json.dumps(v) != json.dumps(default[k])}
        lines.append(f"| {r['stage']} | {r['name']} | {r['seed']} | {r['metrics']['recall@1']:.3f} | "
                     f"{r['metrics']['one_shot']:.3f} | {shifted_cell(r)} | {r['train_seconds']:.0f} | "
                     f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f} | {recipe or 'defaults'} |")
    if shifted:
        lines += ["", "Test-time shifts (`one_shot_accuracy(shift=s)`: each image embedded as the mean over itself and "
                  "its 8 translates by s px of the 105 px input): one-shot accuracy of saved models.", "",
                  "| stage | name | seed | " + " | ".join(f"shift {s}" for s in SHIFTS) + " |",
                  "| --- " * (3 + len(SHIFTS)) + "|"]
        for r in shifted:
            by_shift = r["one_shot_by_shift"]
            lines.append(f"| {r['stage']} | {r['name']} | {r['seed']} | "
                         + " | ".join((f"{by_shift[str(s)]:.3f}" if str(s) in by_shift else "-") for s in SHIFTS)
                         + " |")
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
    parser.add_argument("--save-dir", help="validation: save each candidate's model here as NAME_seedS.keras")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--shifts", nargs="*", default=[], metavar="MODEL",
                        help="score saved models at every test-time shift of SHIFTS (with --stage and --seed)")
    parser.add_argument("--stage", choices=("validation", "final"), default="validation",
                        help="--shifts: the validation episodes (validation models) or the official runs")
    args = parser.parse_args(argv)
    results = Path(args.results)

    def chosen(name):
        return settings(*CANDIDATES[name], steps=args.steps)

    for name in args.candidates:
        write(validate(name, chosen(name), args.seed, args.data_dir, args.save_dir), results)
    for model_path in args.shifts:
        write(shifts(model_path, args.stage, args.seed, args.data_dir), results)
    if args.final:
        write(final(args.final, chosen(args.final), args.seed, args.data_dir, args.export_dir), results)


if __name__ == "__main__":
    main()
