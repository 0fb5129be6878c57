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
P, K, SIZE = 4, 4, 224
BACKBONE = "small_cnn"  # at 224 px its full-resolution 64-channel activations take ~100 MB an image in a step
PER_CLASS = 25


def make_folder(root, images, classes=None, side=160, seed=0):
    """``images`` smooth random JPEGs (side x side) in ``classes`` class folders (default: PER_CLASS per class).

    Each image is an 8 x 8 colour pattern upscaled (bicubic) and JPEG-encoded with Pillow: ~1 ms an image,
    so the issue's 200,000 images take minutes. Image ``i`` goes to class ``i % classes``.
    """
    from PIL import Image

    classes = classes or -(-images // PER_CLASS)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (64, 8, 8, 3)).astype(np.float32)
    for c in range(classes):
        (root / f"c{c:05d}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        small = base[i % 64] * rng.uniform(0.5, 1.0) + rng.normal(0, 8, (8, 8, 3))
        image = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
        image.save(root / f"c{i % classes:05d}" / f"{i}.jpg", quality=90)


def _sample_rss(child, start, samples, found, after_mark, mark, every=5.0):
    """Appends ``[seconds, RSS in GB]`` of ``child`` to ``samples`` every ``every`` seconds until it ends; kills
    it (SIGKILL, ``found["cut"]``) ``after_mark`` seconds after ``found["marked_seconds"]`` (after the start
    without a ``mark``) when given."""
    import signal

    while (rss := _rss_gb(child.pid)) is not None:
        now = time.perf_counter() - start
        samples.append([round(now, 1), round(rss[0], 3)])
        if after_mark is not None and now > found.get("marked_seconds", now if mark else 0) + after_mark:
            found["cut"] = True
            child.send_signal(signal.SIGKILL)
            return
        time.sleep(every)


def run_child(command, env, stop_at=None, mark=None, after_mark=None):
    """Runs ``command``; returns a dict: seconds, peak RSS in GB (the child's rusage), return code, last lines.

    ``stop_at``: a regular expression; the first output line that matches it gets the child killed (SIGKILL:
    Ctrl-C is held while the run writes its state, and the evaluation would go on), and the seconds are those
    until that line. ``mark``: a regular expression; at the first line that matches it the child's peak RSS so
    far (VmHWM) and the seconds are kept (``marked_rss_gb``, ``marked_seconds``). The child's RSS is sampled
    every 5 s (``samples``: ``[seconds, GB]``); ``after_mark``: seconds after the mark (after the start without a
    ``mark``) when the child is killed (``cut``: True).
    """
    import re
    import signal
    import threading

    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples, found = [], {}
    threading.Thread(target=_sample_rss, args=(child, start, samples, found, after_mark, mark), daemon=True).start()
    lines, seconds = [], None
    for line in child.stdout:
        lines.append(line.rstrip())
        if mark and "marked_seconds" not in found and re.search(mark, line):
            found.update(marked_seconds=time.perf_counter() - start, marked_rss_gb=(_rss_gb(child.pid) or [0, 0])[1])
        if stop_at and seconds is None and re.search(stop_at, line):
            seconds = time.perf_counter() - start
            child.send_signal(signal.SIGKILL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    killed = seconds is not None or found.get("cut")
    code = 0 if killed and child.returncode == -signal.SIGKILL else child.returncode
    seconds = time.perf_counter() - start if seconds is None else seconds
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1024 ** 2, "code": code,
            "tail": [line for line in lines if line][-3:], "samples": samples, **found}


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


TRAINED = r"^\d+/\d+ - .*loss"  # Keras' line at the end of the epoch (--verbose 2)


def train_rss(folder, out, cache, steps, root=ROOT, stop_after_training=False, backbone=BACKBONE,
              evaluation_seconds=None, plots=False):
    """``run_child``'s figures of ``rankloss-tf train`` on ``folder``, with ``evaluation``: the seconds, the RSS
    samples (first, peak, last) after the epoch ended (the evaluation of the test half and the rest of the
    command) and the peak RSS through training (``marked_rss_gb``); with ``stop_after_training`` the command is
    killed once its epoch ends (before the evaluation of the test half), with ``evaluation_seconds`` that many
    seconds after it (``evaluation["cut"]``: the evaluation did not end); ``plots``: the command's default plots
    (their gallery reads the images it shows), else ``--no-plots``."""
    command = [str(Path(sys.executable).parent / "rankloss-tf"), "train", "--dataset", f"folder:{folder}",
               "--image-size", str(SIZE), "--backbone", backbone,
               *(() if backbone == "small_cnn" else ("--weights", "random", "--fine-tune")),
               "--augment", "none", "--classes-per-batch", str(P),
               "--samples-per-class", str(K), "--epochs", "1", "--steps-per-epoch", str(steps),
               *(() if plots else ("--no-plots",)), "--verbose", "2", "--out", str(out)]
    run = run_child(command, child_env(cache, root), TRAINED if stop_after_training else None, mark=TRAINED,
                    after_mark=evaluation_seconds)
    if run["code"] != 0:
        raise SystemExit(f"train failed ({run['code']}): {run['tail']}")
    after = [rss for t, rss in run["samples"] if t >= run.get("marked_seconds", run["seconds"])]
    if after and not stop_after_training:
        run["evaluation"] = {"seconds": run["seconds"] - run["marked_seconds"], "rss_first_gb": after[0],
                             "rss_peak_gb": max(after), "rss_last_gb": after[-1],
                             "cut": bool(run.get("cut"))}
    return run


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

METRICS = """
import json, sys, time
import numpy as np
from rankloss_tf.evaluation import evaluate
count, classes = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
labels = np.arange(count) % classes
embeddings = rng.normal(size=(classes, 128)).astype(np.float32)[labels] + rng.normal(size=(count, 128)).astype(np.float32)
t = time.perf_counter()
evaluate(embeddings, labels)
print(json.dumps({"embeddings": count, "evaluate_seconds": time.perf_counter() - t}))
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


EXTRACT_PARTS = """
import json, logging, os, sys, time
import numpy as np
from rankloss_tf import datasets
from rankloss_tf.backbones import efficientnet_lite0, extract_features
folder, S, weights, part_size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
logging.basicConfig(level=logging.INFO, format="%(created).1f %(message)s", stream=sys.stdout)
t = time.perf_counter()
images = datasets.load("folder:" + folder, "train", image_size=S)
print(json.dumps({"load_seconds": time.perf_counter() - t, "images": int(images.cardinality())}), flush=True)
if not os.path.exists(weights):  # one set of random weights for every run: a resumed run finds the parts
    model = efficientnet_lite0(weights=None, image_size=S)
    np.savez(weights, **{f"{l.name}/{w.name}": w.numpy() for l in model.layers for w in l.weights})
    del model
print(json.dumps({"start": time.time()}), flush=True)
rows = extract_features(images, image_size=S, weights=weights, dataset_id="bench", verbose=0, part_size=part_size,
                        rows=True)  # the parts kept (FeatureRows), as the frozen protocol asks for its training split
print(json.dumps({"done": time.time(), "rows": len(rows)}), flush=True)
"""

HEAD_FROM_PARTS = """
import json, sys, time
import keras, numpy as np
from rankloss_tf import datasets
from rankloss_tf.backbones import extract_features
from rankloss_tf.data import pk_batches
from rankloss_tf.losses import MultiSimilarityLoss
from rankloss_tf.models import projection_head
from rankloss_tf.references import streamed
folder, S, weights, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
images = datasets.load("folder:" + folder, "train", image_size=S)
rows = extract_features(images, image_size=S, weights=weights, dataset_id="bench", verbose=0, rows=True)
P = min(32, len(np.unique(rows.labels)))
batches = pk_batches(streamed(rows.references()), None, classes_per_batch=P, samples_per_class=4, seed=0)
head = projection_head(rows.dim, 128)
head.compile(optimizer=keras.optimizers.Adam(1e-3), loss=MultiSimilarityLoss())
print(json.dumps({"rows": len(rows), "feature_gb": rows.nbytes / 1e9, "start": time.time()}), flush=True)
t = time.perf_counter()
head.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
print(json.dumps({"rows": len(rows), "feature_gb": rows.nbytes / 1e9, "head_steps": steps, "pk": [P, 4],
                  "head_rows_per_s": steps * P * 4 / (time.perf_counter() - t)}), flush=True)
"""


def _rss_gb(pid):
    """(current, peak) resident set of a live process from /proc, in GB (None once it has ended)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return tuple(int(fields[key].split()[0]) / 1024 ** 2 for key in ("VmRSS", "VmHWM"))
    except (OSError, ValueError, KeyError):  # ended (a zombie has no VmRSS)
        return None


def timed_extraction(folder, cache, seconds, part_size, weights, size=SIZE):
    """One extraction child run for at most ``seconds`` (then SIGKILL): its parts, RSS samples, rates.

    The child logs every part it writes; the parent samples the child's RSS every 10 s. Returns the
    seconds from the backbone's start to each part, the images in the parts written, and the peak RSS.
    """
    import signal

    log = tempfile.NamedTemporaryFile("w+", delete=False, suffix=".log")
    command = [sys.executable, "-c", EXTRACT_PARTS, str(folder), str(size), str(weights), str(part_size)]
    child = subprocess.Popen(command, env=child_env(cache), stdout=log, stderr=subprocess.STDOUT, text=True)
    start, samples, killed = time.perf_counter(), [], False
    while child.poll() is None:
        time.sleep(10)
        rss = _rss_gb(child.pid)
        if rss:
            samples.append([round(time.perf_counter() - start), round(rss[0], 3), round(rss[1], 3)])
        if time.perf_counter() - start > seconds and child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed = True
    child.wait()
    log.seek(0)
    lines = log.read().splitlines()
    os.unlink(log.name)
    info = {k: v for line in lines if line.startswith("{") for k, v in json.loads(line).items()}
    parts = [(float(line.split()[0]), int(line.split("(")[1].split()[0])) for line in lines
             if "Features: part" in line]
    run = {"killed": killed, "wall_seconds": time.perf_counter() - start, "scan_or_load_seconds": info.get("load_seconds"),
           "split_images": info.get("images"), "parts_written": len(parts), "images_extracted": sum(n for _, n in parts),
           "peak_rss_gb": max([s[2] for s in samples] or [0]), "rss_samples": samples,
           "finished": "done" in info, "tail": lines[-3:]}
    if parts and "start" in info:
        run["extract_images_per_s"] = run["images_extracted"] / (parts[-1][0] - info["start"])
    return run


def child_json(code, args, cache, seconds=None):
    """The JSON the child prints last, with its peak RSS and seconds; killed after ``seconds`` (then ``cut``, and
    its RSS samples instead of its JSON)."""
    run = run_child([sys.executable, "-c", code, *map(str, args)], child_env(cache), after_mark=seconds)
    if run.get("cut"):
        return {"cut": True, "peak_rss_gb": run["peak_rss_gb"], "seconds": run["seconds"], "rss_samples": run["samples"]}
    if run["code"] != 0:
        raise SystemExit(f"child failed ({run['code']}): {run['tail']}")
    return {**json.loads(run["tail"][-1]), "peak_rss_gb": run["peak_rss_gb"], "seconds": run["seconds"],
            "rss_samples": run["samples"]}


def _md_sizes(results):
    lines = ["| images | classes | peak RSS of the command (GB) | peak RSS through training (GB) | "
             "RSS in the evaluation (GB, first / peak / last) | training (s) | evaluation (s) | load | scan (s) | "
             "cached re-scan (s) | evaluate() alone on N/2 embeddings: peak RSS (GB), s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in results["sizes"]:
        e, trained = row.get("evaluation"), row.get("training_peak_rss_gb")
        rss = f"{e['rss_first_gb']:.2f} / {e['rss_peak_gb']:.2f} / {e['rss_last_gb']:.2f}" if e else "-"
        rss += " (cut)" if e and e.get("cut") else ""
        lines.append(f"| {row['images']:,} | {row.get('classes', '')} | {row['peak_rss_gb']:.2f} | "
                     f"{trained or row['peak_rss_gb']:.2f} | {rss} | {row.get('fit_seconds') or row['train_seconds']:.0f} | "
                     f"{e['seconds'] if e else 0:.0f} | {row.get('load', [''])[0]} | {row['scan_seconds']:.1f} | "
                     f"{row['rescan_seconds']:.2f} | {_md_metrics(row.get('metrics_only'))} |")
    return lines


def _md_metrics(metrics):
    if not metrics:
        return "-"
    if metrics.get("cut"):
        return f"{metrics['peak_rss_gb']:.2f}, cut at {metrics['seconds']:.0f} s"
    return f"{metrics['peak_rss_gb']:.2f}, {metrics['evaluate_seconds']:.0f} s"


def _md_extraction(results):
    e = results.get("extraction")
    if e is None:
        return []
    if "runs" not in e:
        return [f"Frozen-feature extraction (EfficientNet-Lite0, {SIZE} px, parts of 256 images on disk): "
                f"{e['extract_images_per_s']:.1f} images/s over {e['extracted']:,} images, peak RSS "
                f"{e['peak_rss_gb']:.2f} GB.", ""]
    split = next((run["split_images"] for run in e["runs"] if run.get("split_images")), 0)
    lines = [f"Frozen-feature extraction, {e['folder_images']:,}-image folder (its train split: "
             f"{split:,} images), EfficientNet-Lite0 (random weights in a weights file) at "
             f"{e.get('image_size', SIZE)} px, parts of {e['part_size']:,} images on disk. Runs of a given time: "
             "each run but the last is killed (SIGKILL) after its time and the next one resumes from the last "
             "complete part:", "",
             "| run | seconds | folder load + scan (s) | parts written | images extracted | images/s | "
             "peak RSS (GB) | RSS at 10 s steps (GB, first .. last) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, run in enumerate(e["runs"]):
        rss = [sample[1] for sample in run["rss_samples"]]
        lines.append(f"| {i + 1}{' (resumed)' if i else ''} | {run['wall_seconds']:.0f} | "
                     f"{run['scan_or_load_seconds'] or 0:.0f} | {run['parts_written']} | {run['images_extracted']:,} | "
                     f"{run.get('extract_images_per_s', 0):.1f} | {run['peak_rss_gb']:.2f} | "
                     f"{rss[0] if rss else 0:.2f} .. {rss[-1] if rss else 0:.2f} |")
    head = e.get("head")
    if head:
        rss = [sample[1] for sample in head["rss_samples"]]
        lines += ["", f"The head then trained from the parts on disk (FeatureRows, {head['rows']:,} rows, "
                  f"{head['feature_gb']:.2f} GB of features; P x K {head['pk'][0]} x {head['pk'][1]}, {head['head_steps']} steps): "
                  f"{head['head_rows_per_s']:,.0f} rows/s, peak RSS {head['peak_rss_gb']:.2f} GB (RSS at 5 s steps: "
                  f"{rss[0]:.2f} .. {max(rss):.2f} .. {rss[-1]:.2f} GB)."]
    return lines + [""]


def write_results(results, path):
    path.mkdir(parents=True, exist_ok=True)
    stopped = ("killed when its epoch ends: the evaluation of the test half at 224 px (~0.2 s an "
               "image here) would take hours at this size" if results.get("stop_after_training")
               else "then the evaluation on the test half")
    lines = ["# Streaming training data (issue 29, parts 1 and 3)", "",
             f"Machine: {results['machine']}; load average before / after: {results['load_before']} / "
             f"{results['load_after']} (a shared machine: figures vary with the load).", "",
             f"`rankloss-tf train --dataset folder:DIR --image-size {SIZE} --backbone {results['backbone']} "
             f"--augment none` (P x K = {results['pk'][0]} x {results['pk'][1]}, {results['steps']} steps, "
             f"{stopped}), JPEGs of 160 px; the peak RSS is the whole command's (the child's rusage):", ""]
    lines += _md_sizes(results)
    if "baseline" in results:
        base = results["baseline"]
        lines += ["", f"The same command before streaming (the folder read into memory; code at "
                  f"`{base['commit']}`), {base['images']:,} images: peak RSS {base['peak_rss_gb']:.2f} GB, "
                  f"{base['train_seconds']:.0f} s."]
    t = results.get("throughput")
    if t:
        lines += ["", f"Input vs. step at {SIZE} px ({t['images']:,}-image folder): the streamed sampler "
                  f"delivers {t['input_images_per_s']:.0f} images/s, a training step consumes "
                  f"{t['step_images_per_s']:.0f} images/s: **{t['input_images_per_s'] / t['step_images_per_s']:.1f}x**.",
                  ""]
    lines += _md_extraction(results)
    lines += results.get("notes", [])
    results_file.write(path / "streaming", results, "\n".join(lines) + "\n")


def prefix_folder(source, root, images, classes):
    """Hard-links the first ``images`` images of ``source`` (a ``make_folder`` folder with ``classes`` classes)
    into ``root``: the same folder ``make_folder(root, images, classes)`` writes (same seed, same draws in the
    same order), in no time and no disk."""
    for i in range(images):
        target = root / f"c{i % classes:05d}" / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source / target.parent.name / target.name, target)


def _train_sizes(args, work, results):
    largest = work / f"folder_{max(args.images)}"
    for images in sorted(args.images, reverse=True):  # the largest first: the others are its prefixes
        folder = work / f"folder_{images}"
        if not folder.is_dir() and folder != largest and args.classes:
            prefix_folder(largest, folder, images, args.classes)
        elif not folder.is_dir():
            make_folder(folder, images, args.classes)
    limits = dict(zip(sorted(args.images), args.evaluation_seconds or ()))
    for images in sorted(args.images):
        folder = work / f"folder_{images}"
        classes = sum(1 for _ in folder.iterdir())
        scan, rescan = scan_times(folder, work / f"cache_{images}")
        run = train_rss(folder, work / f"run_{images}", work / f"cache_{images}", args.steps,
                        stop_after_training=args.stop_after_training, backbone=args.backbone,
                        evaluation_seconds=limits.get(images) or None, plots=args.plots)
        shutil.rmtree(work / f"run_{images}", ignore_errors=True)
        results["sizes"].append({"images": images, "classes": classes, "peak_rss_gb": run["peak_rss_gb"],
                                 "train_seconds": run["seconds"], "scan_seconds": scan, "rescan_seconds": rescan,
                                 "training_peak_rss_gb": run.get("marked_rss_gb"),
                                 "fit_seconds": run.get("marked_seconds"), "evaluation": run.get("evaluation"),
                                 "rss_samples": run["samples"], "load": machine.load(2),
                                 "metrics_only": child_json(METRICS, [images // 2, classes // 2], work,
                                                            args.metrics_seconds)})
        print(json.dumps({k: v for k, v in results["sizes"][-1].items() if k != "rss_samples"}), flush=True)
        results["sizes"].sort(key=lambda row: row["images"])
        write_results({**results, "load_after": machine.load(2)}, Path(args.results))  # a row at a time


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--classes", type=int, default=None, help="class folders (default: 25 images a class)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backbone", default=BACKBONE,
                        help="the train command's backbone (not small_cnn: random weights, fine-tuned)")
    parser.add_argument("--batches", type=int, default=12, help="sampler batches timed")
    parser.add_argument("--extract", type=int, default=1024, help="images through the frozen backbone")
    parser.add_argument("--extract-seconds", type=float, nargs="+", default=None,
                        help="instead: extract the largest folder's train split in runs of these many seconds, "
                             "each killed at its end and resumed by the next (a timed prefix)")
    parser.add_argument("--part-size", type=int, default=2048, help="images a part with --extract-seconds")
    parser.add_argument("--extract-size", type=int, default=SIZE, help="image side of the timed extraction")
    parser.add_argument("--head-steps", type=int, default=200,
                        help="after a finished timed extraction: P x K head steps trained from the parts on disk")
    parser.add_argument("--stop-after-training", action="store_true",
                        help="kill the train command when its epoch ends (no evaluation of the test half)")
    parser.add_argument("--evaluation-seconds", type=float, nargs="+", default=None,
                        help="for each size (smallest first; 0: no limit): kill the train command this many seconds "
                             "after its epoch ends (a timed part of the evaluation: its RSS, not its end)")
    parser.add_argument("--plots", action="store_true", help="the train command with its plots (default: --no-plots)")
    parser.add_argument("--metrics-seconds", type=float, default=None,
                        help="kill the metrics-only child (evaluate() on random embeddings as many as the test half) "
                             "after this many seconds: its RSS so far")
    parser.add_argument("--only", choices=("train", "extract"), default=None,
                        help="run one half; the other half's figures already in the results file are kept")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--baseline-root", default=None,
                        help="also run the largest size's train command with this checkout's code (e.g. the commit "
                             "before streaming, which reads the folder into memory)")
    parser.add_argument("--baseline-label", default=None, help="what the baseline code is (e.g. its commit)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 and 400 images, results under .bench/")
    return parser


def _extraction(args, work, largest):
    if not args.extract_seconds:
        return child_json(EXTRACT, [largest, args.extract, SIZE, work / "lite0.npz"], work / "cache_extract")
    weights = work / f"lite0_{args.extract_size}.npz"
    runs = [timed_extraction(largest, work / "cache_extract", seconds, args.part_size, weights, args.extract_size)
            for seconds in args.extract_seconds]
    result = {"folder_images": max(args.images), "part_size": args.part_size, "image_size": args.extract_size,
              "runs": runs}
    if runs[-1]["finished"] and args.head_steps:  # the head's P x K batches read from the parts on disk
        result["head"] = child_json(HEAD_FROM_PARTS, [largest, args.extract_size, weights, args.head_steps],
                                    work / "cache_extract")
    return result


def main():
    args = _parser().parse_args()
    if args.quick:
        args.images, args.steps, args.batches, args.extract = [200, 400], 2, 4, 64
        args.results = str(ROOT / ".bench" / "streaming")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_streaming-"))
    previous = Path(args.results) / "streaming.json"
    results = json.loads(previous.read_text()) if args.only and previous.is_file() else {}
    results.update({"machine": machine.line(), "load_before": machine.load(2), "backbone": args.backbone, "pk": [P, K]})
    largest = work / f"folder_{max(args.images)}"
    try:
        if args.only != "extract":
            kept = [row for row in results.get("sizes", []) if row["images"] not in args.images]  # other sizes' rows
            results.update({"steps": args.steps, "sizes": kept, "stop_after_training": args.stop_after_training})
            _train_sizes(args, work, results)
            if args.baseline_root:
                run = train_rss(largest, work / "run_baseline", work / "cache_baseline", args.steps,
                                Path(args.baseline_root).resolve(), backbone=args.backbone)
                results["baseline"] = {"commit": args.baseline_label or args.baseline_root, "images": max(args.images),
                                       "peak_rss_gb": run["peak_rss_gb"], "train_seconds": run["seconds"]}
            results["throughput"] = {"images": max(args.images), **child_json(
                THROUGHPUT, [largest, args.batches, P, K, SIZE, args.backbone], work / f"cache_{max(args.images)}")}
            print(json.dumps(results["throughput"]), flush=True)
        if args.only != "train":
            results["extraction"] = _extraction(args, work, largest)
            print(json.dumps(results["extraction"]), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = machine.load(2)
    write_results(results, Path(args.results))


if __name__ == "__main__":
    main()
