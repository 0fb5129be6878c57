"""Evaluation speed and memory: 60,000 x 512 embeddings, and kNN scaling vs scikit-learn.

Measures, each in a fresh subprocess (so peak resident memory is its own):

1. ``evaluate`` (Recall@1/2/4/8, MAP@R, R-precision; clustering off) on
   60,000 x 512 embeddings of 12,000 classes x 5 samples (the size of the
   Stanford Online Products test set): wall time and peak RSS, next to the
   time of the bare matmuls it cannot avoid (same blocks, no top_k).
2. Exact 8-nearest-neighbour search (query excluded) for N = 10k .. 100k
   x 512: ``rankloss_tf.evaluation.nearest_neighbours`` vs scikit-learn
   ``NearestNeighbors(algorithm="brute")``: time, peak RSS, and whether both
   found the same neighbours.

Writes benchmarks/results/evaluation.json and evaluation.md (--quick: N = 10k
only, results under .bench/results-quick/).

Usage: python benchmarks/bench_evaluation.py [--sizes 10000 25000 50000 100000] [--quick]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import machine, results as results_file

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path(__file__).resolve().parents[1] / ".bench" / "results-quick"
DIM = 512


def make_embeddings(n, per_class=5, seed=0):
    """Unit rows around n / per_class random class centres; labels [n]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) // per_class
    centres = rng.standard_normal((labels[-1] + 1, DIM), dtype=np.float32)
    x = centres[labels] + 4.0 * rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_evaluate(n):
    import tensorflow as tf

    from rankloss_tf.evaluation import evaluate

    x, labels = make_embeddings(n)
    rss_before = peak_rss_gb()
    start = time.perf_counter()
    metrics = evaluate(x, labels, ks=(1, 2, 4, 8), clustering=False)
    seconds = time.perf_counter() - start
    rss_peak = peak_rss_gb()
    references = tf.constant(x)
    start = time.perf_counter()
    for i in range(0, n, 1024):
        tf.matmul(references[i : i + 1024], references, transpose_b=True).numpy()
    matmul_seconds = time.perf_counter() - start
    return dict(n=n, seconds=seconds, matmul_seconds=matmul_seconds, peak_rss_gb=rss_peak,
                rss_before_gb=rss_before, metrics=metrics)


def run_knn(n, implementation, indices_path):
    from sklearn.neighbors import NearestNeighbors

    from rankloss_tf.evaluation import nearest_neighbours

    x, _ = make_embeddings(n)
    start = time.perf_counter()
    if implementation == "rankloss_tf":
        indices, _ = nearest_neighbours(x, k=8)
    else:
        found = NearestNeighbors(n_neighbors=9, algorithm="brute").fit(x).kneighbors(x, return_distance=False)
        # Drop each query itself (its own nearest neighbour on distinct rows).
        indices = np.array([[j for j in row if j != i][:8] for i, row in enumerate(found)])
    seconds = time.perf_counter() - start
    np.save(indices_path, np.sort(indices, axis=1))
    return dict(n=n, implementation=implementation, seconds=seconds, peak_rss_gb=peak_rss_gb())


def in_subprocess(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    output = subprocess.run([sys.executable, __file__, "--one", *map(str, args)], env=env, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 25000, 50000, 100000])
    parser.add_argument("--evaluate-size", type=int, default=60000)
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="N = 10,000 only; results under .bench/")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.evaluate_size = [10000], 10000
    out = QUICK_RESULTS if args.quick else RESULTS
    if args.one:
        kind, n, *rest = args.one
        result = run_evaluate(int(n)) if kind == "evaluate" else run_knn(int(n), *rest)
        print(json.dumps(result))
        return

    evaluation = in_subprocess("evaluate", args.evaluate_size)
    print(f"evaluate {args.evaluate_size} x {DIM}: {evaluation['seconds']:.1f} s, "
          f"peak RSS {evaluation['peak_rss_gb']:.2f} GB", flush=True)
    scaling = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.sizes:
            paths = {name: f"{scratch}/{name}.npy" for name in ("rankloss_tf", "sklearn")}
            ours = in_subprocess("knn", n, "rankloss_tf", paths["rankloss_tf"])
            theirs = in_subprocess("knn", n, "sklearn", paths["sklearn"])
            same = np.all(np.load(paths["rankloss_tf"]) == np.load(paths["sklearn"]), axis=1).mean()
            scaling.append(dict(n=n, rankloss_tf_seconds=ours["seconds"], rankloss_tf_peak_rss_gb=ours["peak_rss_gb"],
                                sklearn_seconds=theirs["seconds"], sklearn_peak_rss_gb=theirs["peak_rss_gb"],
                                same_neighbour_sets=float(same)))
            print(json.dumps(scaling[-1]), flush=True)

    import sklearn

    results = dict(machine=dict(machine.describe(), sklearn=sklearn.__version__), dim=DIM, evaluate=evaluation,
                   knn_scaling=scaling)
    lines = [
        "# Evaluation benchmark",
        "",
        f"{machine.line()}, scikit-learn {sklearn.__version__}; "
        f"embeddings {DIM}-d, unit norm, classes of 5. Produced by benchmarks/bench_evaluation.py.",
        "",
        f"`evaluate` on {evaluation['n']:,} x {DIM} (Recall@1/2/4/8, MAP@R, R-precision): "
        f"**{evaluation['seconds']:.1f} s**, peak RSS **{evaluation['peak_rss_gb']:.2f} GB** "
        f"({evaluation['rss_before_gb']:.2f} GB before the call: TensorFlow + data); "
        f"the bare similarity matmuls alone take {evaluation['matmul_seconds']:.1f} s.",
        "",
        "Exact 8-NN (query excluded), time / peak RSS:",
        "",
        "| N | rankloss_tf | scikit-learn brute | queries with the same 8 neighbours |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {row['n']:,} | {row['rankloss_tf_seconds']:.1f} s / {row['rankloss_tf_peak_rss_gb']:.2f} GB | "
        f"{row['sklearn_seconds']:.1f} s / {row['sklearn_peak_rss_gb']:.2f} GB | {row['same_neighbour_sets']:.2%} |"
        for row in scaling
    ]
    results_file.write(out / "evaluation", results, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
