"""First contact: a user's own folder of images, trained with the defaults alone vs the best flags found.

Builds class folders of real images OUTSIDE the repository (``--root``, default
``.bench/first_contact``; git ignores ``.bench/``): photos from Cars196 (each
folder its own car models, its own size, format and image sizes) and one folder
of small grey Omniglot characters. Each folder is trained with
``rankloss-tf train --dataset folder:DIR`` and no other flag, then with a small
grid of flags (backbone, epochs, views, loss); every run's held-out Recall@1
(the folder's half of classes it never trained on, seed 0), recipe and wall
time go to benchmarks/results/first_contact.{json,md} with the machine and load.

Usage::

    python benchmarks/first_contact.py                   # build the folders, run the grid
    python benchmarks/first_contact.py --folders cars_8x20 --grid defaults small_cnn
"""

import argparse
import csv
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from harness import machine, results as results_file
from rankloss_tf.app.config import TrainConfig
from rankloss_tf.app.runner import train

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results" / "first_contact"
# name: (source, classes, images per class, first class, format, sizes: None (as stored) or (low, high) sides)
FOLDERS = {
    "cars_8x20_jpg": ("cars196", 8, 20, 101, "jpg", None),
    "cars_12x30_png": ("cars196", 12, 30, 121, "png", (160, 480)),
    "cars_30x40_webp": ("cars196", 30, 40, 141, "webp", (200, 640)),
    "omniglot_30x20_png": ("omniglot", 30, 20, 0, "png", None),
}
# The grid: flags beside the defaults (an empty dict); each is one `train` run on every folder.
GRID = {
    "defaults": {},
    "small_cnn": {"backbone": "small_cnn"},
    "efficientnet_lite0": {"backbone": "efficientnet_lite0"},
    "single_view": {"backbone": "efficientnet_lite0", "view_sizes": (224,), "mirror_views": False},
    "epochs_40": {"backbone": "efficientnet_lite0", "epochs": 40},
    "epochs_100": {"backbone": "efficientnet_lite0", "epochs": 100},
    "npair_angular": {"backbone": "efficientnet_lite0", "loss": "npair_angular"},
    "multi_similarity": {"backbone": "efficientnet_lite0", "loss": "multi_similarity"},
    "lr_3e-4": {"backbone": "efficientnet_lite0", "learning_rate": 3e-4},
    "small_cnn_40": {"backbone": "small_cnn", "epochs": 40},
    "plain_small_cnn": {"backbone": "small_cnn", "image_size": 64, "augment": "none", "class_rotations": 1,
                        "learning_rate": 1e-3, "epochs": 20},  # the folder default before the recipes were chosen
    "small_cnn_omniglot": {"backbone": "small_cnn", "image_size": 32, "augment": "affine", "class_rotations": 4,
                           "learning_rate": 3e-3, "epochs": 80},
}


def _cars(classes, per_class, first):
    """``{class name: [image paths]}`` of Cars196 classes ``first .. first + classes - 1``."""
    files = {}
    with open(DATA / "cars196" / "labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if first <= int(row["class_id"]) < first + classes:
                path = DATA / "cars196" / f"cropped_{row['split']}" / row["file"]
                files.setdefault(row["class_name"].replace("/", "-"), []).append(path)
    return {name: [Image.open(p) for p in sorted(paths)[:per_class]] for name, paths in sorted(files.items())}


def _omniglot(classes, per_class):
    """``{character: [images]}``: the first ``classes`` characters of the small1 background set."""
    found = {}
    with zipfile.ZipFile(DATA / "omniglot" / "images_background_small1.zip") as archive:
        for name in sorted(n for n in archive.namelist() if n.endswith(".png")):
            character = "_".join(Path(name).parent.parts[-2:])
            if character in found or len(found) < classes:
                found.setdefault(character, []).append(Image.open(io.BytesIO(archive.read(name))))
    return {name: images[:per_class] for name, images in found.items()}


def build_folder(root, name):
    """Writes folder ``name`` of ``FOLDERS`` under ``root`` (kept when present); returns its path."""
    source, classes, per_class, first, fmt, sizes = FOLDERS[name]
    folder = Path(root) / name
    if folder.is_dir():
        return folder
    rng = np.random.default_rng(first)
    images = _cars(classes, per_class, first) if source == "cars196" else _omniglot(classes, per_class)
    partial = folder.with_name(folder.name + ".partial")
    for label, pictures in images.items():
        (partial / label).mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(pictures):
            if sizes:  # a side drawn in [low, high], an aspect ratio in [3/4, 4/3]
                side, aspect = rng.integers(*sizes), rng.uniform(0.75, 4 / 3)
                picture = picture.resize((int(side), int(side / aspect)))
            picture.save(partial / label / f"{i:03d}.{fmt}")
    partial.rename(folder)
    return folder


def run(folder, flags, cache_dir, seed):
    """Trains ``folder`` with ``flags`` and ``seed`` (its class split) in a temporary run directory: one row."""
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(dataset=f"folder:{folder}", out_dir=out, plots=False, verbose=0, cache_dir=cache_dir,
                             seed=seed, **flags)
        started = time.perf_counter()
        result = train(config)
        recorded = json.loads((Path(out) / "run.json").read_text())
    keys = ("recipe", "recipe_why", "backbone", "loss", "epochs", "view_sizes", "mirror_views", "image_size")
    return {"recall@1": result.metrics["recall@1"], "seconds": time.perf_counter() - started,
            "load": machine.load(1)[0],
            **{key: recorded[key] for key in keys}}


def _by_entry(rows):
    """``{entry: (rows of every seed)}``: a row's key is "entry" (seed 0) or "entry@seed"."""
    grouped = {}
    for key, row in rows.items():
        grouped.setdefault(key.split("@")[0], []).append(row)
    return grouped


def _load_range(results):
    loads = [row["load"] for rows in results["folders"].values() for row in rows.values() if "load" in row]
    return f"{min(loads)}-{max(loads)} at the runs' ends" if loads else f"{results['load']} at the start"


def write_markdown(results):
    """results/first_contact.md: per folder, every grid entry's Recall@1 (mean over the seeds run), the defaults'
    gap to the best entry run on as many seeds."""
    lines = ["# First contact: defaults vs the best flags found", "",
             f"Machine: {results['machine']}; 1-minute load {_load_range(results)}. Held-out Recall@1 (the "
             "folder's held-out half of classes; seeds: the class splits averaged); "
             "`python benchmarks/first_contact.py`.", ""]
    for folder, rows in results["folders"].items():
        grouped = _by_entry(rows)
        mean = {name: float(np.mean([row["recall@1"] for row in group])) for name, group in grouped.items()}
        default = grouped.get("defaults")
        peers = [name for name in grouped if default and len(grouped[name]) >= len(default)]
        best = max(peers, key=mean.get) if peers else None
        gap = f"; defaults {100 * (mean[best] - mean['defaults']):.1f} points below the best ({best})" if best else ""
        lines += [f"## {folder}{gap}", "", "| flags | recipe | backbone | loss | epochs | views | seeds | R@1 | s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, group in grouped.items():
            row = group[0]
            views = f"{row['view_sizes']}{' +mirror' if row['mirror_views'] else ''}" if row["view_sizes"] else "-"
            lines.append(f"| {name} | {row['recipe']} | {row['backbone']} | {row['loss']} | {row['epochs']} | "
                         f"{views} | {len(group)} | {mean[name]:.3f} | {np.mean([r['seconds'] for r in group]):.0f} |")
        lines += ["", f"Recipe chosen: {default[0]['recipe']} ({default[0]['recipe_why']})" if default else "",
                  *{f"Note: {row['note']}." for group in grouped.values() for row in group if "note" in row}, ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=HERE.parent / ".bench" / "first_contact", type=Path)
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=list(FOLDERS))
    parser.add_argument("--grid", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--results", default=RESULTS, help="results/first_contact (.json and .md)")
    parser.add_argument("--seed", type=int, default=0, help="the folder's class split (rows of seed > 0: entry@seed)")
    args = parser.parse_args(argv)
    out = Path(args.results).with_suffix("")
    results = results_file.read(out, default={"folders": {}})
    results.update(machine=machine.line(), load=" ".join(f"{x:.1f}" for x in machine.load()))
    for name in args.folders:
        folder = build_folder(args.root, name)
        rows = results["folders"].setdefault(name, {})
        for entry in args.grid:
            if name.startswith("omniglot") and entry not in ("defaults", "efficientnet_lite0", "single_view",
                                                              "plain_small_cnn", "small_cnn_omniglot"):
                continue  # the head variations are for photos
            key = entry if args.seed == 0 else f"{entry}@{args.seed}"
            rows[key] = run(folder, GRID[entry], str(args.root / "features"), args.seed)
            print(name, key, f"R@1 {rows[key]['recall@1']:.3f}", f"{rows[key]['seconds']:.0f} s", flush=True)
            results_file.write(out, results, write_markdown(results))


if __name__ == "__main__":
    main()
