"""Cross-replica mining cost per loss, and `model.fit` step time on 1 vs 2 logical CPU devices.

Per loss (--kernel-batch G=4096, D=128, R=4 replicas): loss + gradient time of one device
on the global batch, against the summed time of the R replicas' shares (each replica's
G / R anchors against the gathered global batch, the kernels' `anchors` argument, as
`cross_replica=True` runs the triplet losses; for contrastive, angular and N-pair a share of
the global batch's work, the `share` argument), and the peak resident memory of each process. Before this form every replica ran
the whole [G, G] kernel: R times one device by construction. Two batch orders: "sampler"
(the P x K sampler's order, each class's samples together, so a replica's rows hold
whole classes) and "shuffled" (a random permutation: a replica's rows' positives are
mostly on other replicas).

Each configuration runs in its own process (logical devices are process-wide):
- 1 device, no strategy;
- 2 logical devices, MirroredStrategy, `TripletSemiHardLoss(cross_replica=True)`;
- 2 logical devices, MirroredStrategy, local mining (`cross_replica=False`), to show the
  cost of the all-gather.
Model: scikit-learn digits (64 features) -> Dense 256 relu -> Dense 128 -> L2 norm,
global batch P=32 x K=4, SGD. The step time is the median over timed steps after one
warm-up epoch (tracing excluded). Logical devices share the same cores: this measures
the overhead of the strategy and the gather, not a speed-up.
Writes benchmarks/results/distribute.json and distribute.md (--quick: under .bench/).

Usage: python benchmarks/bench_distribute.py [--steps 40] [--quick]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness import machine, results as results_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
P, K = 32, 4
KERNEL_LOSSES = {
    "contrastive": ("contrastive_loss", {}),
    "triplet_semihard": ("triplet_semihard_loss", {}),
    "triplet_hard": ("triplet_hard_loss", {}),
    "npair": ("npair_loss", {}),
    "angular": ("angular_loss", {}),
    "npair_angular": ("npair_angular_loss", {}),
}


ORDERS = ("sampler", "shuffled")


def kernel_labels(loss, batch, order, seed=0):
    """Labels [batch] of the per-loss table: K = 2 (N-pair) or 4 per class, in `order`."""
    rng = np.random.default_rng(seed)
    per_class = 2 if loss.startswith("npair") else 4
    labels = np.repeat(rng.permutation(batch // per_class), per_class)
    return (labels if order == "sampler" else rng.permutation(labels)).astype(np.int32)


def kernel_step(loss, replicas, batch, dim, order):
    """A function timing one loss + gradient pass of one device on the global batch
    (replicas=1), or of `replicas` replicas' shares run one after the other."""
    import tensorflow as tf

    from rankloss_tf import ops
    from rankloss_tf.losses import LOSSES

    name, kwargs = KERNEL_LOSSES[loss]
    kernel = getattr(ops, name)
    rng = np.random.default_rng(0)
    labels = tf.constant(kernel_labels(loss, batch, order))
    embeddings = tf.Variable(rng.standard_normal((batch, dim)).astype(np.float32))
    local = batch // replicas
    shares = LOSSES[loss].shares

    @tf.function
    def share(replica):
        with tf.GradientTape() as tape:
            if replicas == 1:
                values = kernel(labels, embeddings, **kwargs)
            elif shares:  # as cross_replica=True: a share of the batch's work (then one all-reduce of G values)
                values = kernel(labels, embeddings, share=(replica, replicas), **kwargs)
            else:
                values = kernel(labels, embeddings, anchors=(replica * local, local), **kwargs)
            total = tf.reduce_sum(values)
        return total, tape.gradient(total, embeddings)

    def step():
        start = time.perf_counter()
        for replica in range(replicas):
            value, gradient = share(tf.constant(replica))
            gradient.numpy()
        return time.perf_counter() - start

    step()  # tracing
    return step


def peak_rss_gb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1e6 for line in status if line.startswith("VmHWM:"))


def time_kernel(loss, replicas, batch, dim, repeats, order="shuffled"):
    """Median loss + gradient time of `kernel_step` and the process's peak resident memory."""
    step = kernel_step(loss, replicas, batch, dim, order)
    times = [step() for _ in range(repeats)]
    return {"median_s": float(np.median(times)), "peak_rss_gb": peak_rss_gb()}


def time_ratio(loss, replicas, batch, dim, repeats, order="shuffled"):
    """Median times of one device and of the replicas' shares, alternated in one process
    (a ratio that a changing load on a shared machine moves less than separate runs)."""
    one, many = kernel_step(loss, 1, batch, dim, order), kernel_step(loss, replicas, batch, dim, order)
    pairs = [(one(), many()) for _ in range(repeats)]
    return {"one_device_s": float(np.median([a for a, _ in pairs])), "replicas_s": float(np.median([b for _, b in pairs]))}


CONFIGS = {
    "1 device": {"devices": 1, "cross_replica": True},
    "2 logical devices, cross_replica=True": {"devices": 2, "cross_replica": True},
    "2 logical devices, cross_replica=False": {"devices": 2, "cross_replica": False},
}


def pk_digits(steps, seed=0):
    """`steps` P x K batches of scikit-learn digits, concatenated."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)
    rng = np.random.RandomState(seed)
    rows = []
    for _ in range(steps):
        # 10 digit classes: P=32 draws 32 (class, K samples) groups, classes repeating.
        for c in rng.choice(10, P, replace=True):
            rows.append(rng.choice(np.flatnonzero(y == c), K, replace=False))
    rows = np.concatenate(rows)
    return x[rows], y[rows]


def time_fit(devices, cross_replica, steps):
    """Median and mean step time (ms) of `model.fit` in this process."""
    import tensorflow as tf

    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    import keras

    from rankloss_tf.losses import TripletSemiHardLoss

    strategy = (
        tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
        if devices > 1
        else tf.distribute.get_strategy()
    )
    keras.utils.set_random_seed(0)
    x, y = pk_digits(steps + 3)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(P * K).cache()
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(128),
                keras.layers.UnitNormalization(),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=TripletSemiHardLoss(cross_replica=cross_replica))
    model.fit(dataset.take(3), epochs=1, verbose=0)  # tracing and warm-up

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    model.fit(dataset.skip(3), epochs=1, verbose=0, callbacks=[StepTimes()])
    return {"median_ms": 1e3 * float(np.median(times)), "mean_ms": 1e3 * float(np.mean(times)), "steps": len(times)}


def run_config(name, steps):
    config = CONFIGS[name]
    command = [sys.executable, __file__, "--worker", str(config["devices"]), str(config["cross_replica"]), str(steps)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load = machine.load()[0]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return {**config, **json.loads(result.stdout.strip().splitlines()[-1]), "load_before": load}


def run_kernel(loss, replicas, batch, dim, repeats, order, worker="--kernel-worker"):
    command = [sys.executable, __file__, worker, loss, str(replicas), str(batch), str(dim), str(repeats), order]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load = machine.load()[0]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "load_before": load}


def kernel_markdown(report):
    rows = report["cross_replica"]
    lines = [
        f"## Cross-replica mining: {rows['replicas']} replicas vs one device, global batch "
        f"{rows['batch']}, D={rows['dim']}",
        "",
        "Loss + gradient; time: medians over rounds that alternate one device and the replicas in one process "
        "(the ratio a changing load moves least); peak memory: each configuration alone in a fresh process. "
        "Replicas: the summed time of every replica's share "
        "(triplet losses: its anchors against the gathered global batch; contrastive, angular and N-pair: "
        "its share of the global batch's work — the unordered pairs, the anchors sorted by label, the tuples), "
        "run one after the other, so that the peak memory is one share's. Batch order: \"sampler\" is the "
        "P x K sampler's (a class's samples together: a replica's rows hold whole classes), \"shuffled\" a "
        "random permutation (a row's positives mostly on other replicas).",
        "",
        "| loss | order | one device | replicas, summed | time ratio | peak memory, one device | "
        "peak memory, one replica | load before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for loss, orders in rows["losses"].items():
        for order, row in orders.items():
            one, many, times = row["one_device"], row["replicas"], row["times"]
            lines.append(
                f"| {loss} | {order} | {times['one_device_s'] * 1e3:.0f} ms | {times['replicas_s'] * 1e3:.0f} ms | "
                f"{times['replicas_s'] / times['one_device_s']:.2f}x | {one['peak_rss_gb']:.2f} GB | "
                f"{many['peak_rss_gb']:.2f} GB | {times['load_before']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def markdown(report):
    lines = [
        "# model.fit step time: 1 vs 2 logical CPU devices",
        "",
        "Produced by `python benchmarks/bench_distribute.py`. scikit-learn digits, Dense 256 relu -> Dense 128 "
        f"-> L2 norm, TripletSemiHardLoss, global batch {P} x {K} = {P * K}, SGD; median over "
        f"{report['steps']} timed steps after a warm-up epoch, each configuration in a fresh process.",
        "",
        f"Machine: {report['machine']}. The logical devices share the same {report['cores']} cores, so this "
        "measures the overhead of MirroredStrategy and of the cross-replica all-gather, not a speed-up. "
        "The machine is shared: the 1-minute load average before each run is given.",
        "",
        "| configuration | median step | mean step | load before |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in report["results"].items():
        lines.append(f"| {name} | {row['median_ms']:.1f} ms | {row['mean_ms']:.1f} ms | {row['load_before']:.1f} |")
    return "\n".join(lines) + "\n\n" + kernel_markdown(report)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    parser.add_argument("--quick", action="store_true", help="5 timed steps; results under .bench/")
    parser.add_argument("--kernel-batch", type=int, default=4096, help="global batch of the per-loss table")
    parser.add_argument("--kernel-dim", type=int, default=128)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--kernel-worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--ratio-worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("DEVICES", "CROSS_REPLICA", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        devices, cross_replica, steps = int(args.worker[0]), args.worker[1] == "True", int(args.worker[2])
        sys.stdout.write(json.dumps(time_fit(devices, cross_replica, steps)) + "\n")
        return
    for worker, function in ((args.kernel_worker, time_kernel), (args.ratio_worker, time_ratio)):
        if worker:
            loss, replicas, batch, dim, repeats, order = worker
            sys.stdout.write(json.dumps(function(loss, int(replicas), int(batch), int(dim), int(repeats), order)) + "\n")
            return
    steps = 5 if args.quick else args.steps
    batch, repeats = (64, 1) if args.quick else (args.kernel_batch, 15)
    import tensorflow  # noqa: F401  (imported, so machine.line() names its version)

    report = {
        "steps": steps,
        "cores": machine.describe()["cpus"],
        "machine": machine.line(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": {name: run_config(name, steps) for name in CONFIGS},
        "cross_replica": {
            "batch": batch, "dim": args.kernel_dim, "replicas": args.replicas,
            "losses": {
                loss: {
                    order: {
                        "times": run_kernel(loss, args.replicas, batch, args.kernel_dim, repeats, order, "--ratio-worker"),
                        "one_device": run_kernel(loss, 1, batch, args.kernel_dim, 1, order),
                        "replicas": run_kernel(loss, args.replicas, batch, args.kernel_dim, 1, order),
                    }
                    for order in ORDERS
                }
                for loss in KERNEL_LOSSES
            },
        },
    }
    out = ROOT / ".bench" if args.quick else HERE / "results"
    results_file.write(out / "distribute", report, markdown(report))
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
