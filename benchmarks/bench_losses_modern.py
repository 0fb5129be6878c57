"""Peak memory and time of the issue-31 pair-based kernels at a large batch (default B = 16384, D = 128).

Each loss runs in its own process (``ru_maxrss`` is a per-process peak): one traced
forward + backward pass on a P x K batch (K = 4), timed after a first warm-up call. One
float32 [B, B] matrix is 1 GiB at B = 16384; the kernels' blocks (``ops.blocks``, budget
1.5 GiB) keep the peak at a small multiple of the budget instead of ~10 such matrices.

Writes ``benchmarks/results/losses_modern.json`` and ``.md`` (``--quick``: B = 1024, under ``.bench/``),
with the machine's load.

Usage::

    python benchmarks/bench_losses_modern.py [--batch 16384] [--dim 128] [--quick]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from harness import machine, results as results_file

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ("multi_similarity", "supcon", "ntxent")


def _one(name, batch, dim):
    import numpy as np
    import tensorflow as tf

    from rankloss_tf import ops

    kernel = {"multi_similarity": ops.multi_similarity_loss, "supcon": ops.supcon_loss, "ntxent": ops.ntxent_loss}[name]
    rng = np.random.default_rng(0)
    labels = tf.constant(np.repeat(np.arange(batch // 4), 4)[rng.permutation(batch)], tf.int32)
    embeddings = tf.constant(rng.normal(size=(batch, dim)).astype(np.float32))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_mean(kernel(labels, x))
        return value, tf.reduce_sum(tf.abs(tape.gradient(value, x)))

    step(embeddings)
    start = time.perf_counter()
    value, gradient = step(embeddings)
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"loss": name, "batch": batch, "dim": dim, "seconds": round(seconds, 2), "peak_rss_gib": round(peak_gib, 2),
            "value": float(value), "finite_gradient": bool(np.isfinite(float(gradient)))}


def _write(rows, load, quick):
    folder = ROOT / (".bench" if quick else "benchmarks/results")
    folder.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine.line(), "load_average": load, "rows": rows}
    lines = ["# Today's pair losses at a large batch: one forward + backward pass", "",
             f"Machine: {report['machine']}; load average before / after: {load}.", "",
             "| loss | B | D | seconds | peak RSS (GiB) | finite gradient |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['loss']} | {r['batch']} | {r['dim']} | {r['seconds']} | {r['peak_rss_gib']} | {r['finite_gradient']} |"
              for r in rows]
    results_file.write(folder / "losses_modern", report, "\n".join(lines) + "\n")
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="B = 1024, results under .bench/")
    parser.add_argument("--one", choices=LOSSES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    batch = 1024 if args.quick else args.batch
    if args.one:
        sys.stdout.write(json.dumps(_one(args.one, batch, args.dim)) + "\n")
        return 0
    before, rows = machine.load(2), []
    for name in LOSSES:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(batch), "--dim", str(args.dim)],
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if out.returncode:
            sys.stderr.write(out.stderr[-2000:])
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        sys.stdout.write(json.dumps(rows[-1]) + "\n")
    load = [before, machine.load(2)]
    sys.stdout.write(f"written to {_write(rows, load, args.quick)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
