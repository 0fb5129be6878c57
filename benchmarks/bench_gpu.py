"""One-GPU benchmark in under 5 minutes: loss kernels, the evaluation kernel, a Lite0 fit step.

- Losses: every loss, forward + backward, ours and ours under XLA, in float32,
  mixed_float16 and mixed_bfloat16 (the embeddings in the policy's compute dtype), B up to
  32768 at D=128 (labels of B/4 classes x 4; B/2 x 2 for the N-pair losses). A series
  stops at its first failure (out of memory) or when the time budget is spent.
- Evaluation: `rankloss_tf.evaluation.nearest_neighbours` of 10^6 x 128 embeddings
  against themselves (k=4, blocked matmul + top-k).
- Fit: one `model.fit` step of the Cars196 Lite0 fine-tune shape (EfficientNet-Lite0
  backbone, 224 x 224, batch 32 x 4 = 128, TripletSemiHardLoss; random weights and images:
  the step time does not depend on them).

- Strategy: with --strategy (auto, mirrored, ...: `rankloss_tf.app.strategy`), the fit
  step runs under that tf.distribute strategy as `rankloss-tf train --strategy` runs it: the
  global batch stays P x K, each replica gets its share, the loss mines across replicas; the
  report names the strategy and its replicas (`--strategy mirrored --tiny` checks the path in
  one short call).

Writes benchmarks/results/gpu.json and gpu.md (the device named); --tiny runs small sizes
on any device (the test suite's CPU run) and writes under .bench/.

Usage: python benchmarks/bench_gpu.py [--tiny] [--budget-s 270] [--out PATH] [--strategy auto]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from harness import results as results_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOSSES = {
    "semihard": "TripletSemiHardLoss",
    "hard": "TripletHardLoss",
    "contrastive": "ContrastiveLoss",
    "npair": "NPairLoss",
    "angular": "AngularLoss",
    "npair_angular": "NPairAngularLoss",
}
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
FULL = {"batches": [1024, 4096, 16384, 32768], "dim": 128, "gallery": 10**6, "image": 224, "pk": (32, 4), "steps": 5}
TINY = {"batches": [16, 32], "dim": 8, "gallery": 2000, "image": 32, "pk": (2, 2), "steps": 1}


def _timed(run, repeats):
    run()  # tracing / compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loss_time(loss, xla, policy, batch, dim):
    """Median forward + backward time of one loss configuration, in seconds."""
    import tensorflow as tf

    from rankloss_tf import losses

    per_class = 2 if loss.startswith("npair") else 4
    rng = np.random.default_rng(0)
    labels = tf.constant(np.repeat(np.arange(batch // per_class), per_class).astype(np.int32))
    compute_dtype = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}[policy]
    embeddings = tf.Variable(rng.standard_normal((batch, dim)).astype(np.float32))
    loss_object = getattr(losses, LOSSES[loss])()

    @tf.function(jit_compile=xla)
    def step():
        with tf.GradientTape() as tape:
            value = loss_object(labels, tf.cast(embeddings, compute_dtype))
        return value, tape.gradient(value, embeddings)

    return _timed(lambda: [t.numpy() for t in step()], 3)


def evaluation_time(gallery, dim):
    import tensorflow as tf

    from rankloss_tf.evaluation import nearest_neighbours

    embeddings = tf.random.stateless_normal([gallery, dim], seed=[1, 2])
    return _timed(lambda: nearest_neighbours(embeddings, k=4), 1)


def fit_step_time(image, pk, steps, strategy="default"):
    """Seconds per `model.fit` step of the Lite0 fine-tune shape under the named tf.distribute strategy."""
    import keras

    from rankloss_tf.losses import TripletSemiHardLoss
    from rankloss_tf.models import build_embedding_model
    from rankloss_tf.app.strategy import build_strategy, synchronized_batch_norm

    p, k = pk
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(p * k * (steps + 1), image, image, 3), dtype=np.uint8)
    y = np.tile(np.repeat(np.arange(p), k), steps + 1).astype(np.int32)
    distribution = build_strategy(strategy)
    with distribution.scope():
        model = build_embedding_model((image, image, 3), embedding_dim=128, backbone="efficientnet_lite0",
                                      weights=None)
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=TripletSemiHardLoss(cross_replica=distribution.num_replicas_in_sync > 1))
    with synchronized_batch_norm(model, distribution):
        model.fit(x[: p * k], y[: p * k], batch_size=p * k, epochs=1, verbose=0)  # tracing
        start = time.perf_counter()
        model.fit(x[p * k :], y[p * k :], batch_size=p * k, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps, distribution.num_replicas_in_sync


def run(sizes, budget_s, strategy="default"):
    """Every measurement that fits in `budget_s` seconds; failures and skips recorded."""
    deadline = time.monotonic() + budget_s
    records = []
    for loss in LOSSES:
        for xla in (False, True):
            for policy in POLICIES:
                for batch in sizes["batches"]:
                    row = {"loss": loss, "xla": xla, "policy": policy, "batch": batch, "dim": sizes["dim"]}
                    if time.monotonic() > deadline:
                        records.append({**row, "status": "skipped (time budget)"})
                        continue
                    try:
                        records.append({**row, "status": "ok", "time_s": loss_time(loss, xla, policy, batch, sizes["dim"])})
                    except Exception as error:  # out of memory ends the series
                        records.append({**row, "status": f"{type(error).__name__}: {str(error)[:200]}"})
                        break
    evaluation = {"gallery": sizes["gallery"], "dim": 128, "time_s": evaluation_time(sizes["gallery"], 128)}
    step_s, replicas = fit_step_time(sizes["image"], sizes["pk"], sizes["steps"], strategy)
    fit = {"image": sizes["image"], "batch": sizes["pk"][0] * sizes["pk"][1], "step_s": step_s,
           "strategy": strategy, "replicas": replicas}
    return records, evaluation, fit


def device_name():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU only (no GPU visible)"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


def markdown(report):
    lines = [
        "# One-GPU benchmark",
        "",
        f"Produced by `python benchmarks/bench_gpu.py`. Device: {report['device']}. "
        f"TensorFlow {report['tensorflow']}. {report['date']}.",
        "",
        "## Losses, forward + backward (median of 3 after compilation)",
        "",
        "| loss | XLA | policy | B | time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["losses"]:
        value = f"{r['time_s'] * 1e3:.2f} ms" if r["status"] == "ok" else r["status"]
        lines.append(f"| {r['loss']} | {'yes' if r['xla'] else 'no'} | {r['policy']} | {r['batch']} | {value} |")
    e, f = report["evaluation"], report["fit"]
    lines += [
        "",
        f"Evaluation kernel (`nearest_neighbours`, k=4): {e['gallery']} x {e['dim']} against itself in "
        f"{e['time_s']:.2f} s.",
        "",
        f"Fit step (EfficientNet-Lite0, {f['image']} x {f['image']}, batch {f['batch']}, TripletSemiHardLoss; "
        f"strategy {f.get('strategy', 'default')}, {f.get('replicas', 1)} replica(s)): {f['step_s'] * 1e3:.0f} ms.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes for any device; results under .bench/")
    parser.add_argument("--budget-s", type=float, default=150.0, help="seconds for the loss sweep")
    parser.add_argument("--out", default=None, help="output path without suffix")
    parser.add_argument("--strategy", default="default", choices=("auto", "default", "mirrored"),
                        help="tf.distribute strategy of the fit step (auto: mirrored over several GPUs)")
    args = parser.parse_args(argv)
    import tensorflow as tf

    records, evaluation, fit = run(TINY if args.tiny else FULL, args.budget_s, args.strategy)
    report = {
        "device": device_name(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "losses": records,
        "evaluation": evaluation,
        "fit": fit,
    }
    default = ROOT / ".bench" / "results-tiny" / "gpu" if args.tiny else HERE / "results" / "gpu"
    out = Path(args.out) if args.out else default
    results_file.write(out, report, markdown(report))
    sys.stdout.write(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
