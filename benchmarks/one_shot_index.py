"""Omniglot one-shot classification through a retrieval index: the 20 official runs.

Each run of Lake et al.'s ``all_runs.zip`` has 20 training images (one per
class: the gallery) and 20 test images (the queries). For every run this
builds a ``rankloss_tf.retrieval.Index`` of the training images with the
given model, exports it as one SavedModel, and classifies each test image by
its nearest gallery item through the exported ``search`` signature (and the
Python index: both must agree). Accuracy = share of the 400 queries whose
nearest gallery item is of the right class.

Writes benchmarks/results/one_shot_index.md and .json.

Usage: python benchmarks/one_shot_index.py --model RUN_OR_SAVEDMODEL [--runs-zip PATH]
"""

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf.retrieval import Index, save_index
from rankloss_tf.retrieval.embedder import as_embedder

from harness import machine, results as results_file

ROOT = Path(__file__).resolve().parents[1]
RUNS_ZIP = ROOT.parent / "shared" / "data" / "omniglot" / "all_runs.zip"
RESULTS = ROOT / "benchmarks" / "results" / "one_shot_index"


def read_runs(path):
    """[(run name, training images, training names, test images, true training name per test)]."""
    runs = []
    with zipfile.ZipFile(path) as archive:
        names = sorted({n.split("/")[0] for n in archive.namelist() if n.startswith("run")})
        for run in names:
            pairs = [line.split() for line in archive.read(f"{run}/class_labels.txt").decode().splitlines() if line.strip()]
            training = sorted(n for n in archive.namelist() if n.startswith(f"{run}/training/") and n.endswith(".png"))
            decode = lambda member: tf.io.decode_png(archive.read(member), channels=1).numpy()  # noqa: E731
            runs.append((
                run,
                np.stack([decode(n) for n in training]),
                training,
                np.stack([decode(test) for test, _ in pairs]),
                [answer for _, answer in pairs],
            ))
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="training run directory, .keras file or SavedModel")
    parser.add_argument("--runs-zip", default=str(RUNS_ZIP))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    embedder = as_embedder(args.model)
    start = time.perf_counter()
    per_run, mismatches = {}, 0
    with tempfile.TemporaryDirectory() as scratch:
        for run, gallery, gallery_names, queries, answers in read_runs(args.runs_zip):
            index = Index(embedder)
            index.add(gallery, np.arange(len(gallery)), ids=gallery_names)
            exported = tf.saved_model.load(str(save_index(index, Path(scratch) / run)))
            found = exported.signatures["search"](images=tf.constant(queries), k=tf.constant(1))["ids"].numpy()
            found = [f.decode() for f in found[:, 0]]
            mismatches += int(np.sum(np.array(found) != index.search(queries, k=1).ids[:, 0]))
            per_run[run] = float(np.mean([f == a for f, a in zip(found, answers)]))
    accuracy = float(np.mean(list(per_run.values())))
    record = {"model": args.model, "accuracy": accuracy, "per_run": per_run, "queries": 20 * len(per_run),
              "exported_vs_python_mismatches": mismatches, "seconds": time.perf_counter() - start,
              "load": machine.load()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    lines = [
        "# Omniglot one-shot (20 official runs, 20-way) through the exported index",
        "",
        f"Model: `{args.model}`. Gallery per run = its 20 training images; queries = its 20 test images; "
        "a query is right when its nearest gallery item (cosine, exported `search` signature) is its class.",
        "",
        f"**Accuracy: {accuracy:.4f}** over {record['queries']} queries "
        f"({min(per_run.values()):.2f} to {max(per_run.values()):.2f} per run); exported vs Python index "
        f"mismatches: {mismatches}; {record['seconds']:.0f} s, load {record['load'][0]:.2f}.",
        "",
        "| run | accuracy |",
        "| --- | ---: |",
        *[f"| {run} | {value:.2f} |" for run, value in per_run.items()],
    ]
    results_file.write(out, record, "\n".join(lines) + "\n")
    print(f"one-shot accuracy {accuracy:.4f} ({mismatches} exported/Python mismatches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
