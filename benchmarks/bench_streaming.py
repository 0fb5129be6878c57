"""Streaming training data at scale: peak RSS of `rankloss-tf train`, input vs. step throughput, scan, extraction.

Generates its own data: folders of JPEGs (160 px, 25 images per class) of two
sizes (default 2,000 and 8,000 images; `--images 200000` for the issue's
size, hours on a shared 2-core machine), and measures on each:
- peak RSS of the whole `rankloss-tf train --dataset folder:DIR --image-size 224`
  command (MobileNetV3Small trained end to end from random weights, P x K =
  8 x 4, a few steps, then the evaluation on the test half), from the child's
  rusage: streaming keeps it flat in the number of images (the P x K sampler
  holds paths, not decoded images). The model's own step dominates it: the
  small CNN at 224 px and P x K = 32 x 4 alone peaks at 12.7 GB (full-resolution
  64-channel activations), MobileNetV3Small at 8 x 4 fits;
- the folder scan's time (every image decoded once) and the cached re-scan's;
and once, on the larger folder:
- input images/s of the streamed P x K sampler at 224 px (read, decode,
  resize in parallel) against the images/s a training step of the same model
  consumes (fed from one cached batch): the input must be >= 2x the step;
- frozen-feature extraction images/s (EfficientNet-Lite0 at 224 px, random
  weights saved as a weights file, so the cache and its parts are used) on
  `--extract` images, with the peak RSS of that subprocess.
Writes benchmarks/results/streaming.json and streaming.md with the machine,
the load and the number of images.

Usage: python benchmarks/bench_streaming.py [--images 2000 8000] [--steps 3] [--extract 1024] [--work DIR]
           [--baseline-root DIR --baseline-label COMMIT]   (DIR: e.g. `git archive COMMIT rankloss_tf | tar -x -C DIR`)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import machine, results as results_file

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
P, K, SIZE = 8, 4, 224
BACKBONE = "MobileNetV3Small"  # trained end to end from random weights: its step fits the memory target
PER_CLASS = 25


def make_folder(root, images, side=160, seed=0):
    """``images`` smooth random JPEGs (side x side), PER_CLASS per class folder."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (64, 8, 8, 3)).astype(np.float32)
    for i in range(images):
        class_dir = root / f"c{i // PER_CLASS:05d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        small = base[i % 64] * rng.uniform(0.5, 1.0) + rng.normal(0, 8, (8, 8, 3))
        image = tf.image.resize(small[None], (side, side), method="bicubic")[0]
        tf.io.write_file(str(class_dir / f"{i}.jpg"),
                         tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90))


def run_child(command, env):
    """Runs ``command``; returns (seconds, peak RSS in GB, return code, last output lines)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        log.seek(0)
        tail = log.read().strip().splitlines()[-3:]
    return time.perf_counter() - start, usage.ru_maxrss / 1024 ** 2, os.waitstatus_to_exitcode(status), tail


def child_env(cache, root=ROOT):
    return dict(os.environ, PYTHONPATH=str(root), RANKLOSS_TF_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL="2")


def scan_times(folder, cache):
    code = ("import time,sys; from rankloss_tf.datasets import scan_folder; t=time.perf_counter(); "
            "i=scan_folder(sys.argv[1]); print(time.perf_counter()-t, sum(map(len, i.files.values())))")
    times = []
    for _ in range(2):  # uncached, then cached
        out = subprocess.run([sys.executable, "-c", code, str(folder)], env=child_env(cache), capture_output=True,
                             text=True, check=True).stdout.split()
        times.append(float(out[0]))
    return times


def train_rss(folder, out, cache, steps, root=ROOT):
    command = [str(Path(sys.executable).parent / "rankloss-tf"), "train", "--dataset", f"folder:{folder}",
               "--image-size", str(SIZE), "--backbone", BACKBONE, "--weights", "random", "--fine-tune",
               "--augment", "none", "--classes-per-batch", str(P),
               "--samples-per-class", str(K), "--epochs", "1", "--steps-per-epoch", str(steps), "--no-plots",
               "--verbose", "2", "--out", str(out)]
    seconds, rss, code, tail = run_child(command, child_env(cache, root))
    if code != 0:
        raise SystemExit(f"train failed ({code}): {tail}")
    return seconds, rss


THROUGHPUT = """
import json, sys, time
import keras, numpy as np, tensorflow as tf
from rankloss_tf import datasets
from rankloss_tf.data import pk_batches
from rankloss_tf.losses import NPairAngularLoss
from rankloss_tf.models import build_embedding_model
folder, batches, P, K, S = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
images = datasets.load("folder:" + folder, "train", image_size=S)
it = iter(pk_batches(images, classes_per_batch=P, samples_per_class=K, seed=0))
for _ in range(3): x, y = next(it)
t = time.perf_counter()
for _ in range(batches): next(it)
input_rate = batches * P * K / (time.perf_counter() - t)
model = build_embedding_model((S, S, 3), embedding_dim=128, backbone=sys.argv[6], image_size=S, weights=None)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=NPairAngularLoss())
for _ in range(2): model.train_on_batch(x, y)
t = time.perf_counter()
steps = max(3, batches // 4)
for _ in range(steps): model.train_on_batch(x, y)
step_rate = steps * P * K / (time.perf_counter() - t)
print(json.dumps({"input_images_per_s": input_rate, "step_images_per_s": step_rate}))
"""

EXTRACT = """
import json, sys, time
import numpy as np, tensorflow as tf
from rankloss_tf import datasets
from rankloss_tf.backbones import efficientnet_lite0, extract_features
folder, count, S, weights = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = efficientnet_lite0(weights=None, image_size=S)
np.savez(weights, **{f"{l.name}/{w.name}": w.numpy() for l in model.layers for w in l.weights})
images = datasets.load("folder:" + folder, "train", image_size=S).take(count)
t = time.perf_counter()
features, _ = extract_features(images, image_size=S, weights=weights, dataset_id="bench", verbose=0, part_size=256)
print(json.dumps({"extract_images_per_s": len(features) / (time.perf_counter() - t), "extracted": len(features)}))
"""


def child_json(code, args, cache):
    seconds, rss, status, tail = run_child([sys.executable, "-c", code, *map(str, args)], child_env(cache))
    if status != 0:
        raise SystemExit(f"child failed ({status}): {tail}")
    return {**json.loads(tail[-1]), "peak_rss_gb": rss, "seconds": seconds}


def write_results(results, path):
    path.mkdir(parents=True, exist_ok=True)

    lines = ["# Streaming training data (issue 29, parts 1 and 3)", "",
             f"Machine: {results['machine']}; load average before / after: {results['load_before']} / "
             f"{results['load_after']} (a shared machine: figures vary with the load).", "",
             f"`rankloss-tf train --dataset folder:DIR --image-size {SIZE} --backbone {BACKBONE} --weights random "
             f"--fine-tune --augment none` (P x K = {P} x {K}, "
             f"{results['steps']} steps, then the evaluation on the test half), JPEGs of 160 px, "
             f"{PER_CLASS} per class:", "",
             "| images | peak RSS of the command (GB) | command wall time (s) | scan (s) | cached re-scan (s) |",
             "| --- | --- | --- | --- | --- |"]
    for row in results["sizes"]:
        lines.append(f"| {row['images']:,} | {row['peak_rss_gb']:.2f} | {row['train_seconds']:.0f} | "
                     f"{row['scan_seconds']:.1f} | {row['rescan_seconds']:.2f} |")
    if "baseline" in results:
        base = results["baseline"]
        lines += ["", f"The same command before streaming (the folder read into memory; code at "
                  f"`{base['commit']}`), {base['images']:,} images: peak RSS {base['peak_rss_gb']:.2f} GB, "
                  f"{base['train_seconds']:.0f} s."]
    t, e = results["throughput"], results["extraction"]
    lines += ["", f"Input vs. step at {SIZE} px ({results['sizes'][-1]['images']:,}-image folder): the streamed sampler "
              f"delivers {t['input_images_per_s']:.0f} images/s, a training step consumes {t['step_images_per_s']:.0f} "
              f"images/s: **{t['input_images_per_s'] / t['step_images_per_s']:.1f}x**.", "",
              f"Frozen-feature extraction (EfficientNet-Lite0, {SIZE} px, parts of 256 images on disk): "
              f"{e['extract_images_per_s']:.1f} images/s over {e['extracted']:,} images, peak RSS "
              f"{e['peak_rss_gb']:.2f} GB.", ""]
    results_file.write(path / "streaming", results, "\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12, help="sampler batches timed")
    parser.add_argument("--extract", type=int, default=1024, help="images through the frozen backbone")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--baseline-root", default=None,
                        help="also run the largest size's train command with this checkout's code (e.g. the commit "
                             "before streaming, which reads the folder into memory)")
    parser.add_argument("--baseline-label", default=None, help="what the baseline code is (e.g. its commit)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 and 400 images, results under .bench/")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.batches, args.extract = [200, 400], 2, 4, 64
        args.results = str(ROOT / ".bench" / "streaming")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_streaming-"))
    results = {"machine": machine.line(), "load_before": machine.load(2), "steps": args.steps, "sizes": []}
    try:
        for images in sorted(args.images):
            folder = work / f"folder_{images}"
            if not folder.is_dir():
                make_folder(folder, images)
            scan, rescan = scan_times(folder, work / f"cache_{images}")
            seconds, rss = train_rss(folder, work / f"run_{images}", work / f"cache_{images}", args.steps)
            results["sizes"].append({"images": images, "peak_rss_gb": rss, "train_seconds": seconds,
                                     "scan_seconds": scan, "rescan_seconds": rescan})
            print(json.dumps(results["sizes"][-1]), flush=True)
        largest = work / f"folder_{max(args.images)}"
        if args.baseline_root:
            seconds, rss = train_rss(largest, work / "run_baseline", work / "cache_baseline", args.steps,
                                     Path(args.baseline_root).resolve())
            results["baseline"] = {"commit": args.baseline_label or args.baseline_root, "images": max(args.images), "peak_rss_gb": rss,
                                   "train_seconds": seconds}
            print(json.dumps(results["baseline"]), flush=True)
        results["throughput"] = child_json(THROUGHPUT, [largest, args.batches, P, K, SIZE, BACKBONE],
                                           work / f"cache_{max(args.images)}")
        print(json.dumps(results["throughput"]), flush=True)
        results["extraction"] = child_json(EXTRACT, [largest, args.extract, SIZE, work / "lite0.npz"],
                                           work / "cache_extract")
        print(json.dumps(results["extraction"]), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = machine.load(2)
    write_results(results, Path(args.results))


if __name__ == "__main__":
    main()
