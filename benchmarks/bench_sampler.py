"""Sampler throughput vs. training-step throughput, on Omniglot (in memory and PNG files).

Measures, in one run and on one machine:
- `pk_batches` over in-memory arrays (the Omniglot train images);
- `pk_batches` over the Omniglot PNG files, decoded in parallel;
- the training step of a small convolutional embedding model with
  TripletSemiHardLoss, fed from a cached batch (so the input is free);
- the same model fed by each sampler (end to end).
The sampler must not be the bottleneck: its samples/s must exceed the training
step's. Writes benchmarks/results/sampler.json and sampler.md (--quick: fewer
batches and steps, results under .bench/results-quick/).

Usage: python benchmarks/bench_sampler.py [--data-dir ../shared/data/omniglot] [--quick]
"""

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.data import pk_batches
from rankloss_tf.losses import TripletSemiHardLoss

from harness import machine, results as results_file

P, K = 32, 4
RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path(__file__).resolve().parents[1] / ".bench" / "results-quick"


def samples_per_second(dataset, batches, warmup=5):
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * P * K / (time.perf_counter() - start)


def embedding_model():
    return keras.Sequential([
        keras.Input((105, 105, 1), dtype="uint8"),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(128, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(64),
        keras.layers.UnitNormalization(),
    ])


def fit_samples_per_second(dataset, steps):
    model = embedding_model()
    model.compile(optimizer="adam", loss=TripletSemiHardLoss())
    model.fit(dataset, steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    return steps * P * K / (time.perf_counter() - start)


def png_files(data_dir, out_dir):
    """Extracts the Omniglot train-alphabet PNGs once; returns (paths, labels) by class name."""
    paths, names = [], []
    for zip_name in datasets.omniglot.ZIPS:
        with zipfile.ZipFile(Path(data_dir) / zip_name) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if member.endswith(".png") and parts[1] in datasets.omniglot.TRAIN_ALPHABETS:
                    target = Path(out_dir) / "/".join(parts[1:])
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(archive.read(member))
                        paths.append(str(target))
                        names.append("/".join(parts[1:3]))
    labels = np.unique(names, return_inverse=True)[1]
    return np.array(paths), labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
    parser.add_argument("--data-dir", default=str(default))
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="30 batches, 5 steps; results under .bench/")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.steps = 30, 5
    results = QUICK_RESULTS if args.quick else RESULTS

    images, labels = zip(*datasets.load("omniglot", "train", data_dir=args.data_dir).as_numpy_iterator())
    images, labels = np.stack(images), np.array(labels)
    in_memory = pk_batches(images, labels, classes_per_batch=P, samples_per_class=K, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        paths, file_labels = png_files(args.data_dir, tmp)
        decode = datasets.image_decoder(channels=1)
        files = pk_batches(paths, file_labels, classes_per_batch=P, samples_per_class=K, seed=0,
                           decode_fn=lambda path: tf.ensure_shape(decode(path), [105, 105, 1]))
        figures = {
            "sampler_in_memory": samples_per_second(in_memory, args.batches),
            "sampler_png_files": samples_per_second(files, args.batches // 3),
            "train_step_cached_batch": fit_samples_per_second(in_memory.take(1).cache().repeat(), args.steps),
            "fit_fed_by_in_memory_sampler": fit_samples_per_second(in_memory, args.steps),
            "fit_fed_by_png_file_sampler": fit_samples_per_second(files, args.steps),
        }
    report = {
        "unit": "samples/s",
        "batch": {"classes_per_batch": P, "samples_per_class": K, "image": [105, 105, 1]},
        "model": "3 conv (32/64/128, stride 2) + GAP + Dense 64 + L2 norm, TripletSemiHardLoss, Adam",
        "machine": machine.line(),
        "figures": {name: round(value, 1) for name, value in figures.items()},
        "sampler_not_bottleneck": min(figures["sampler_in_memory"], figures["sampler_png_files"])
        > figures["train_step_cached_batch"],
    }
    rows = "\n".join(f"| {name} | {value:,.0f} |" for name, value in report["figures"].items())
    page = ("# P x K sampler throughput vs. training step\n\n"
            f"Omniglot train alphabets, P={P} x K={K} batches of 105x105x1 uint8; {report['machine']}.\n"
            f"Model: {report['model']}.\n\n| measure | samples/s |\n| --- | --- |\n{rows}\n\n"
            f"Sampler never the bottleneck: {report['sampler_not_bottleneck']}.\n")
    results_file.write(results / "sampler", report, page)
    return report


if __name__ == "__main__":
    main()
