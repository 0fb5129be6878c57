"""Retrieval index speed, memory and recall: exact search vs its floor, scikit-learn and ANN backends.

Galleries of synthetic clustered unit vectors (1,000 Gaussian class centres,
noise 0.3, rows L2-normalised; cosine metric): 10^5 x 128, 10^6 x 128 and
10^5 x 512. For each gallery, each method runs in a fresh subprocess (peak
resident memory is its own):

- ``index``: ``rankloss_tf.retrieval.Index`` exact search (the evaluation
  kernel: blocked matmul + top-k over reference chunks);
- ``floor``: the bare ``tf.matmul`` + ``tf.math.top_k`` of the same queries
  against the whole gallery in one ``tf.function`` (no chunking, no ids): the
  floor exact search cannot beat;
- ``sklearn``: ``NearestNeighbors(algorithm="brute", metric="cosine")``;
- ``faiss`` / ``usearch``: the approximate backends of ``retrieval.ann``
  (HNSW), when installed; recall@10 against the exact top 10.

Measured: build time (adding the gallery), peak RSS, queries/s for batches of
1 query and of 256 queries (each timed for about ``--min-time`` seconds),
recall@10 vs exact. Writes benchmarks/results/index.json, index.md and
index.png (--quick: a 10^4 x 32 gallery, results under .bench/results-quick/).

Usage: python benchmarks/bench_index.py [--quick] [--min-time 3] [--ann-timeout 420]
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
GALLERIES = [(100_000, 128), (1_000_000, 128), (100_000, 512)]
QUICK_GALLERIES = [(10_000, 32)]
METHODS = ("index", "floor", "sklearn", "faiss", "usearch")
K = 10
BATCH = 256
IVF_BEGIN, IVF_END = "<!-- ivf -->", "<!-- /ivf -->"  # benchmarks/bench_ivf.py's section of index.md


def make_data(n, dim, num_queries=BATCH, seed=0):
    """Gallery [n, dim] and queries [num_queries, dim]: unit rows around 1,000 class centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)

    def draw(count):
        x = centres[rng.integers(0, 1000, count)] + 0.3 * rng.normal(size=(count, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(num_queries)


def timed_rate(search, queries, batch, min_time):
    """Queries per second of ``search`` on batches of ``batch`` rows, timed for about ``min_time`` s."""
    search(queries[:batch])  # warm-up (tracing, caches)
    done, start, position = 0, time.perf_counter(), 0
    while True:
        block = queries[position : position + batch]
        search(block)
        done += len(block)
        position = (position + batch) % len(queries)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and done >= batch:
            return done / elapsed


def worker(method, n, dim, min_time, truth_path):
    """One method on one gallery; prints a JSON record."""
    gallery, queries = make_data(n, dim)
    if method == "sklearn":
        from sklearn.neighbors import NearestNeighbors
    else:
        import tensorflow as tf

        from rankloss_tf.retrieval import Index
    start = time.perf_counter()
    if method in ("index", "faiss", "usearch"):
        index = Index(metric="cosine", backend="exact" if method == "index" else method)
        index.add_embeddings(gallery, labels=np.zeros(n, np.int64), ids=np.arange(n).astype(str))
        if method != "index":
            index.search_embeddings(queries[:1], K)  # the ANN graph is built on first search

        def search(q):
            return index.search_embeddings(q, K).indices
    elif method == "floor":
        references = tf.constant(gallery)

        @tf.function(reduce_retracing=True)
        def floor(q):
            return tf.math.top_k(tf.matmul(q, references, transpose_b=True), k=K).indices

        def search(q):
            return floor(tf.constant(q)).numpy()
    else:
        model = NearestNeighbors(n_neighbors=K, algorithm="brute", metric="cosine").fit(gallery)

        def search(q):
            return model.kneighbors(q, return_distance=False)
    build_s = time.perf_counter() - start
    found = np.asarray(search(queries))
    if method == "index":
        np.save(truth_path, found)
    truth = np.load(truth_path)
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))
    record = {
        "method": method, "n": n, "dim": dim, "build_s": build_s,
        "qps_batch1": timed_rate(search, queries, 1, min_time),
        "qps_batch256": timed_rate(search, queries, BATCH, min_time),
        "recall_at_10": recall,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(json.dumps(record))


def run(method, n, dim, min_time, truth_path, timeout):
    command = [sys.executable, __file__, "--worker", method, str(n), str(dim), str(min_time), str(truth_path)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "dim": dim, "status": f"timeout ({timeout} s)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"method": method, "n": n, "dim": dim, "status": f"failed: {tail[0][:200]}"}
    return {**json.loads(lines[-1]), "status": "ok"}


def available(method):
    if method in ("faiss", "usearch"):
        from importlib.util import find_spec

        return find_spec(method) is not None
    return True


def write(rows, out, meta):
    lines = [
        "# Retrieval index: exact search vs floor, scikit-learn, ANN backends",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores; load before the run: {meta['load_before']}, "
        f"after: {meta.get('load_after', '?')}. Synthetic clustered unit vectors, cosine, k = {K}; "
        "queries/s timed for about "
        f"{meta['min_time']} s per batch size. Exact-search ratio = floor qps / index qps (target <= 2).",
        "",
        "| gallery | method | build s | peak RSS GB | q/s batch 1 | q/s batch 256 | recall@10 | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ok = r["status"] == "ok"
        cell = (lambda key, fmt: format(r[key], fmt) if ok else "-")
        lines.append(
            f"| {r['n']:,} x {r['dim']} | {r['method']} | {cell('build_s', '.2f')} | {cell('peak_rss_gb', '.2f')} | "
            f"{cell('qps_batch1', ',.0f')} | {cell('qps_batch256', ',.0f')} | {cell('recall_at_10', '.3f')} | {r['status']} |"
        )
    lines += ["", "Exact search against its floor (same gallery):", "", "| gallery | batch 1 ratio | batch 256 ratio |",
              "| --- | ---: | ---: |"]
    for key, ratio in meta["floor_ratios"].items():
        lines.append(f"| {key} | {ratio[0]:.2f} | {ratio[1]:.2f} |")
    page = out.with_suffix(".md")
    old = page.read_text() if page.exists() else ""
    if IVF_BEGIN in old and IVF_END in old:  # the section bench_ivf.py writes is kept
        lines += ["", old[old.index(IVF_BEGIN) : old.index(IVF_END) + len(IVF_END)]]
    results_file.write(out, {"machine": meta, "results": rows}, "\n".join(lines) + "\n")


def plot(rows, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ok = [r for r in rows if r["status"] == "ok"]
    galleries = sorted({(r["n"], r["dim"]) for r in ok})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(METHODS)
    for j, method in enumerate(METHODS):
        for ax, key in zip(axes, ("qps_batch1", "qps_batch256")):
            values = [next((r[key] for r in ok if (r["n"], r["dim"]) == g and r["method"] == method), 0) for g in galleries]
            ax.bar(np.arange(len(galleries)) + j * width, values, width, label=method)
    for ax, title in zip(axes, ("queries/s, batch of 1", "queries/s, batch of 256")):
        ax.set_xticks(np.arange(len(galleries)) + 0.4 - width / 2, [f"{n:,} x {d}" for n, d in galleries])
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small gallery, results under .bench/")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds timed per batch size")
    parser.add_argument("--ann-timeout", type=int, default=420, help="seconds allowed to one method run")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        method, n, dim, min_time, truth = args.worker
        return worker(method, int(n), int(dim), float(min_time), truth)
    galleries = QUICK_GALLERIES if args.quick else GALLERIES
    out = (QUICK_RESULTS if args.quick else RESULTS) / "index"
    min_time = 0.5 if args.quick else args.min_time
    meta = {"cpu": machine.cpu(), "cores": machine.describe()["cpus"],
            "load_before": machine.load(), "min_time": min_time, "floor_ratios": {}}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n, dim in galleries:
            truth = Path(scratch) / f"truth_{n}_{dim}.npy"
            for method in METHODS:
                if not available(method):
                    rows.append({"method": method, "n": n, "dim": dim, "status": "not installed"})
                    continue
                rows.append(run(method, n, dim, min_time, truth, args.ann_timeout))
                print(json.dumps(rows[-1]), flush=True)
                if method == "index" and rows[-1]["status"] != "ok":
                    break
            by_method = {r["method"]: r for r in rows if (r["n"], r["dim"]) == (n, dim) and r["status"] == "ok"}
            if "index" in by_method and "floor" in by_method:
                meta["floor_ratios"][f"{n:,} x {dim}"] = [
                    by_method["floor"][key] / by_method["index"][key] for key in ("qps_batch1", "qps_batch256")
                ]
    meta["load_after"] = machine.load()
    write(rows, out, meta)
    plot(rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
