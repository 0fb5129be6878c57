"""Cross-replica checks run in a fresh process (logical devices and clusters are process-wide).

`tests/test_distribute.py` launches this script and reads the JSON report it prints as
the last line of stdout:

    python tests/_distribute_worker.py mirrored --replicas 2 [--loop]
        Splits the CPU into max(replicas) logical devices; for every loss and every
        replica count, compares `model.fit` under `MirroredStrategy` with one device fed
        the same global batches, the epoch ending in a batch of one sample (with `--loop`
        also a custom loop: per-replica losses and gradients summed).
    python tests/_distribute_worker.py multiworker --task 0 --ports 12345 12346 --losses npair
        One worker of a two-process `MultiWorkerMirroredStrategy` on localhost: the
        custom-loop comparison.
    python tests/_distribute_worker.py train --out DIR --devices 2
        Splits the CPU into 2 logical devices and trains the same short `rankloss_tf.app`
        run twice, with `strategy="default"` (DIR/one_device) and `strategy="mirrored"`
        (DIR/mirrored); reports the replicas, the logged losses and the largest difference
        between the two saved models' weights; then a mirrored run interrupted after its
        first epoch and resumed (DIR/interrupted) against the uninterrupted one.

The model has one linear embedding head per loss on a shared input, so one traced step
covers every loss. Tracing is the cost (every loss's mining graph once per replica, the
replicas meeting at each cross-replica gather): one `fit` per strategy covers the weights,
the logged losses and the last batch of one sample. The report gives, per replica count and loss, the largest absolute
differences from one device.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from rankloss_tf.losses import registry  # noqa: E402

# The pair-based losses (a ClassLoss trains through a class head, per replica: tests/test_losses_modern*.py).
LOSSES = {name: loss for name, loss in registry().items() if not getattr(loss, "class_head", False)}

GLOBAL_BATCH = 16
FEATURES = 6
EMBEDDING = 4
FIT_STEPS = 2


def global_batches(num_batches, seed=0):
    """`(x [n * 16, 6], y [n * 16])`: per batch 4 classes x 4 samples in random order."""
    rng = np.random.RandomState(seed)
    ys = [rng.permutation(np.repeat(rng.choice(100, 4, replace=False), 4)) for _ in range(num_batches)]
    y = np.concatenate(ys).astype(np.int32)
    x = rng.normal(size=(len(y), FEATURES)).astype(np.float32)
    return x, y


def build_model(names, weights=None):
    """`{loss name: embeddings [B, 4]}`, one Dense head per loss."""
    inputs = keras.Input((FEATURES,))
    model = keras.Model(inputs, {name: keras.layers.Dense(EMBEDDING, name=name)(inputs) for name in names})
    if weights is not None:
        model.set_weights(weights)
    return model


def head_values(model, tensors):
    """`{loss name: [tensor of kernel, tensor of bias]}` from tensors aligned with `model.trainable_variables`."""
    by_path = dict(zip([v.path for v in model.trainable_variables], tensors))
    return {
        layer.name: [np.asarray(by_path[w.path]) for w in layer.trainable_variables]
        for layer in model.layers
        if layer.trainable_variables
    }


def max_difference(a, b):
    return float(max(np.max(np.abs(np.asarray(u) - np.asarray(v))) for u, v in zip(a, b)))


def loss_objects(names, cross_replica=True):
    return {name: LOSSES[name](cross_replica=cross_replica) for name in names}


def losses_and_gradients(model, losses, features, labels):
    """Each head's loss and the gradients of their sum (a head only gets its loss's gradient)."""
    with tf.GradientTape() as tape:
        embeddings = model(features)
        values = {name: loss(labels, embeddings[name]) for name, loss in losses.items()}
        total = tf.add_n(list(values.values()))
    return values, tape.gradient(total, model.trainable_variables)


def replica_slices(strategy, x, y):
    """Per-replica (x, y): replica r holds rows [r * b, (r + 1) * b) of the global batch."""
    size = len(y) // strategy.num_replicas_in_sync

    def local(context):
        start = context.replica_id_in_sync_group * size
        return x[start : start + size], y[start : start + size]

    return strategy.experimental_distribute_values_from_function(local)


def distributed_loop(strategy, names, weights, x, y):
    """Custom loop: per-replica losses and gradients, summed over replicas."""
    with strategy.scope():
        model = build_model(names, weights)
    losses = loss_objects(names)

    @tf.function
    def step(local_x, local_y):
        results = strategy.run(lambda f, l: losses_and_gradients(model, losses, f, l), args=(local_x, local_y))
        return tf.nest.map_structure(lambda v: strategy.reduce("SUM", v, axis=None), results)

    values, gradients = step(*replica_slices(strategy, x, y))
    return {k: float(v) for k, v in values.items()}, head_values(model, gradients)


def local_mining_loss(model, name, x, y, num_replicas):
    """What the replicas sum to without `cross_replica`: each mines its own slice only."""
    loss = LOSSES[name]()
    slices = np.split(np.arange(len(y)), num_replicas)
    return sum(float(loss(y[s], model(x[s])[name])) for s in slices) / num_replicas


def fit(strategy, names, weights, x, y, batch_size=GLOBAL_BATCH):
    """`(model, logged losses)` after one epoch of SGD `model.fit` on batches of `batch_size`."""
    dataset = tf.data.Dataset.from_tensor_slices((x, {name: y for name in names})).batch(batch_size)
    with strategy.scope():
        model = build_model(names, weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_objects(names))
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    return model, history.history


def fitted_heads(strategy, names, weights, x, y):
    """Head weights after an epoch of SGD `model.fit` on `x, y` (global batches, then what is left: one sample),
    the logged losses, and whether every weight is finite."""
    model, history = fit(strategy, names, weights, x, y)
    finite = all(np.isfinite(w).all() for w in model.get_weights())
    return head_values(model, model.trainable_variables), history, finite


def one_device(names, with_fit):
    """The single-device figures on the global batch: loss values, gradients, fitted weights."""
    keras.utils.set_random_seed(0)
    x, y = global_batches(FIT_STEPS)
    x, y = x[: FIT_STEPS * GLOBAL_BATCH + 1], y[: FIT_STEPS * GLOBAL_BATCH + 1]  # the epoch ends in one sample
    model = build_model(names)
    values, gradients = losses_and_gradients(model, loss_objects(names), x[:GLOBAL_BATCH], y[:GLOBAL_BATCH])
    result = {
        "x": x,
        "y": y,
        "model": model,
        "weights": model.get_weights(),
        "values": {name: float(v) for name, v in values.items()},
        "gradients": head_values(model, gradients),
    }
    if with_fit:
        result["fit"] = fitted_heads(tf.distribute.get_strategy(), names, result["weights"], x, y)
    return result


def compare_loop(strategy, names, reference):
    """Per loss: the custom loop's largest differences from one device (`reference`) on one global batch."""
    x, y, weights = reference["x"][:GLOBAL_BATCH], reference["y"][:GLOBAL_BATCH], reference["weights"]
    values, gradients = distributed_loop(strategy, names, weights, x, y)
    return {name: {"loop_loss": abs(values[name] - reference["values"][name]),
                   "loop_gradients": max_difference(gradients[name], reference["gradients"][name])}
            for name in names}


def compare_fit(strategy, names, reference):
    """Per loss: `model.fit`'s largest differences from one device fed the same batches."""
    fitted, history, _ = reference["fit"]
    dist_fitted, dist_history, finite = fitted_heads(strategy, names, reference["weights"], reference["x"],
                                                     reference["y"])
    initial = head_values(reference["model"], reference["weights"])
    return {name: {"fit_weights": max_difference(dist_fitted[name], fitted[name]),
                   "fit_moved": max_difference(fitted[name], initial[name]),
                   "fit_logged_loss": abs(dist_history[f"{name}_loss"][-1] - history[f"{name}_loss"][-1]),
                   "last_sample_fit_finite": finite}
            for name in names}


def compare(strategy, names, reference, loop=True):
    """Report per loss: largest differences between one device (`reference`) and `strategy`: the custom loop
    (with `loop`), `model.fit` (when `reference` has one), and what mining each replica's slice alone gives."""
    x, y = reference["x"][:GLOBAL_BATCH], reference["y"][:GLOBAL_BATCH]
    report = {name: {"loss": reference["values"][name],
                     "gradient_scale": max(float(np.max(np.abs(g))) for g in reference["gradients"][name]),
                     "local_mining_loss": abs(local_mining_loss(reference["model"], name, x, y,
                                                                strategy.num_replicas_in_sync)
                                              - reference["values"][name])}
              for name in names}
    parts = ([compare_loop(strategy, names, reference)] if loop else []) + (
        [compare_fit(strategy, names, reference)] if "fit" in reference else [])
    for part in parts:
        for name in names:
            report[name].update(part[name])
    return report


def mirrored(replica_counts, names, loop=False):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * max(replica_counts)
    )
    reference = one_device(names, with_fit=True)
    report = {}
    for count in replica_counts:
        # Strategies of different sizes in one process need their own collective group
        # keys (both would use key 1 and clash); TensorFlow's tests set this attribute too.
        strategy_class = type(
            "MirroredStrategy", (tf.distribute.MirroredStrategy,), {"_collective_key_base": 1000 * count}
        )
        strategy = strategy_class([f"/cpu:{i}" for i in range(count)])
        report[str(count)] = compare(strategy, names, reference, loop=loop)
    return report


def multiworker(task, ports, names):
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": task},
        }
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    reference = one_device(names, with_fit=False)
    return {str(strategy.num_replicas_in_sync): compare(strategy, names, reference)}


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """Interrupts `fit` after the first epoch's checkpoint, as Ctrl-C would."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def train_twice(out, devices):
    """The short run trained on one device and under `MirroredStrategy` over `devices` logical CPUs."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    from rankloss_tf.app import TrainConfig, train
    from rankloss_tf.app.strategy import build_strategy

    report = {"replicas": build_strategy("mirrored").num_replicas_in_sync}
    weights = {}
    for strategy in ("default", "mirrored"):
        directory = Path(out) / ("one_device" if strategy == "default" else strategy)
        result = train(TrainConfig(dataset="digits", epochs=2, steps_per_epoch=2, plots=False, verbose=0,
                                   out_dir=str(directory), strategy=strategy))
        report[strategy] = result.history.history["loss"]
        weights[strategy] = keras.models.load_model(directory / "model.keras").get_weights()
    report["weights"] = max_difference(weights["default"], weights["mirrored"])
    interrupted = Path(out) / "interrupted"
    try:
        train(TrainConfig(dataset="digits", epochs=2, steps_per_epoch=2, plots=False, verbose=0,
                          out_dir=str(interrupted), strategy="mirrored"), callbacks=[StopAfterFirstEpoch()])
    except KeyboardInterrupt:
        pass
    resumed = train(TrainConfig(dataset="digits", epochs=2, steps_per_epoch=2, plots=False, verbose=0,
                                out_dir=str(interrupted), strategy="mirrored"))
    report["resumed_epochs"] = len(resumed.history.history["loss"])
    report["resumed_weights"] = max_difference(weights["mirrored"],
                                               keras.models.load_model(interrupted / "model.keras").get_weights())
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mirrored_parser = commands.add_parser("mirrored")
    mirrored_parser.add_argument("--replicas", type=int, nargs="+", default=[2])
    mirrored_parser.add_argument("--loop", action="store_true", help="also compare a custom loop")
    worker = commands.add_parser("multiworker")
    worker.add_argument("--task", type=int, required=True)
    worker.add_argument("--ports", type=int, nargs=2, required=True)
    for command in (mirrored_parser, worker):
        command.add_argument("--losses", nargs="+", choices=sorted(LOSSES), default=sorted(LOSSES))
    trainer = commands.add_parser("train")
    trainer.add_argument("--out", required=True)
    trainer.add_argument("--devices", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "train":
        report = train_twice(args.out, args.devices)
    elif args.command == "mirrored":
        report = mirrored(args.replicas, args.losses, args.loop)
    else:
        report = multiworker(args.task, args.ports, args.losses)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
