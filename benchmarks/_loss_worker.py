"""Time one loss configuration: forward + backward, in the interpreter that runs it.

Run by ``bench_losses.py`` as ``python _loss_worker.py '<json>'`` with the keys
``impl`` (ours | ours_xla | ours_before | ours_before_xla | tfa | pml | matmul | matmul_tuples), ``loss``, ``batch``, ``dim``,
``per_class``, ``repeats``, ``min_time_s``, ``budget_s`` and ``seed``. Prints one JSON line:
the median, minimum and maximum time of the timed forward+backward passes, the loss
value, and the process's resident memory before the first pass and at its peak.

Each implementation imports only its own framework, so the same file runs in
the project's environment (TensorFlow 2.16+, rankloss_tf), in the pinned
tensorflow-addons environment (TensorFlow 2.15) and in the PyTorch one.
"""

import json
import os
import resource
import statistics
import sys
import time

import numpy as np

MAX_PASSES = 50

# (loss, per-impl builder name); the builders are below, one per framework.
OURS_CLASSES = {
    "semihard": ("TripletSemiHardLoss", {}),
    "hard": ("TripletHardLoss", {}),
    "contrastive": ("ContrastiveLoss", {}),
    "npair": ("NPairLoss", {"l2_reg": 0.0}),
    "angular": ("AngularLoss", {"alpha": 45.0}),
    "npair_angular": ("NPairAngularLoss", {}),
}


def make_batch(batch, dim, per_class, seed):
    """Random unit-norm embeddings [batch, dim] and labels of batch/per_class classes."""
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((batch, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.repeat(np.arange(batch // per_class), per_class).astype(np.int32)
    return labels, embeddings


def rss_gb(field="VmRSS"):
    """Resident memory of this process now (VmRSS) or at its peak (VmHWM), in GB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def tf_step(impl, loss, labels, embeddings):
    """A zero-argument function doing one forward+backward pass in TensorFlow."""
    import tensorflow as tf

    variable = tf.Variable(embeddings)
    y = tf.constant(labels)
    if impl == "matmul":
        def objective(e):
            return tf.reduce_sum(tf.matmul(e, e, transpose_b=True))
    elif impl == "matmul_tuples":
        # The anchors and positives as they are (no slicing, whose gradient is not a matmul's).
        variable = [tf.Variable(embeddings[0::2]), tf.Variable(embeddings[1::2])]

        def objective(pair):
            return tf.reduce_sum(tf.matmul(pair[0], pair[1], transpose_b=True))
    elif impl in ("ours", "ours_xla", "ours_before", "ours_before_xla"):
        from rankloss_tf import losses

        name, kwargs = OURS_CLASSES[loss]
        loss_object = getattr(losses, name)(**kwargs)

        def objective(e):
            return loss_object(y, e)
    elif impl == "tfa":
        objective = tfa_objective(loss, y)
    else:
        raise ValueError(f"Not a TensorFlow implementation. Received: {impl!r}")

    @tf.function(jit_compile=impl.endswith("_xla"))
    def step():
        with tf.GradientTape() as tape:
            value = objective(variable)
        gradient = tape.gradient(value, variable)
        return value, tf.add_n([tf.reduce_sum(g) for g in tf.nest.flatten(gradient)])

    def run():
        value, gradient_sum = step()
        return float(value.numpy()) + 0.0 * float(gradient_sum.numpy())

    return run


def tfa_objective(loss, y):
    """The tensorflow-addons 0.23 loss for ``loss``, as a function of the embeddings."""
    import tensorflow as tf
    import tensorflow_addons as tfa

    if loss == "semihard":
        loss_object = tfa.losses.TripletSemiHardLoss()
        return lambda e: loss_object(y, e)
    if loss == "hard":
        loss_object = tfa.losses.TripletHardLoss()
        return lambda e: loss_object(y, e)
    if loss == "contrastive":
        loss_object = tfa.losses.ContrastiveLoss()
        same = tf.reshape(tf.cast(tf.equal(y[:, None], y[None, :]), tf.float32), [-1])

        def contrastive(e):
            distances = tfa.losses.metric_learning.pairwise_distance(e, squared=False)
            return loss_object(same, tf.reshape(distances, [-1]))

        return contrastive
    if loss == "npair":
        loss_object = tfa.losses.NpairsLoss()
        return lambda e: loss_object(y[0::2], tf.matmul(e[0::2], e[1::2], transpose_b=True))
    raise ValueError(f"tensorflow-addons has no such loss. Received: {loss!r}")


def torch_step(impl, loss, labels, embeddings):
    """A zero-argument function doing one forward+backward pass in PyTorch."""
    import torch
    from pytorch_metric_learning import losses, miners

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    leaf = torch.tensor(embeddings, requires_grad=True)
    y = torch.tensor(labels, dtype=torch.long)
    if impl == "matmul_torch":
        def objective(e):
            return (e @ e.T).sum()
    elif loss == "semihard":
        miner = miners.TripletMarginMiner(margin=1.0, type_of_triplets="semihard")
        loss_fn = losses.TripletMarginLoss(margin=1.0)
        objective = lambda e: loss_fn(e, y, miner(e, y))  # noqa: E731
    elif loss == "hard":
        miner = miners.BatchHardMiner()
        loss_fn = losses.TripletMarginLoss(margin=1.0)
        objective = lambda e: loss_fn(e, y, miner(e, y))  # noqa: E731
    elif loss == "contrastive":
        loss_fn = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
        objective = lambda e: loss_fn(e, y)  # noqa: E731
    elif loss == "npair":
        loss_fn = losses.NPairsLoss()
        objective = lambda e: loss_fn(e, y)  # noqa: E731
    elif loss == "angular":
        loss_fn = losses.AngularLoss(alpha=45)
        objective = lambda e: loss_fn(e, y)  # noqa: E731
    else:
        raise ValueError(f"pytorch-metric-learning has no such loss. Received: {loss!r}")

    def run():
        leaf.grad = None
        value = objective(leaf)
        value.backward()
        return float(value.detach()) + 0.0 * float(leaf.grad.sum())

    return run


def measure(config):
    """Warm up once, then time passes until ``repeats`` are done or ``budget_s`` is spent."""
    labels, embeddings = make_batch(config["batch"], config["dim"], config["per_class"], config["seed"])
    impl = config["impl"]
    build = torch_step if impl in ("pml", "matmul_torch") else tf_step
    run = build(impl, config["loss"], labels, embeddings)
    base = rss_gb()
    start = time.perf_counter()
    value = run()
    warmup_s = time.perf_counter() - start
    times = []
    spent = 0.0
    # At least `repeats` passes (more, up to MAX_PASSES, while under `min_time_s`: a robust
    # median for fast kernels), and no pass started that would overrun `budget_s`.
    min_time_s = config.get("min_time_s", 2.0)
    while (len(times) < config["repeats"] or spent < min_time_s) and len(times) < MAX_PASSES and (
        not times or spent + times[-1] <= config["budget_s"]
    ):
        start = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return {
        "status": "ok",
        "time_s": statistics.median(times),
        "passes": len(times),
        "min_s": min(times),
        "max_s": max(times),
        "warmup_s": warmup_s,
        "value": value,
        "base_rss_gb": base,
        "peak_rss_gb": rss_gb("VmHWM"),
    }


def main():
    config = json.loads(sys.argv[1])
    try:
        result = measure(config)
    except Exception as error:  # reported to the parent, which records the failure
        text = f"{type(error).__name__}: {error}"
        oom = "ResourceExhausted" in text or "out of memory" in text.lower() or isinstance(error, MemoryError)
        result = {"status": "oom" if oom else "error", "error": text[:500], "peak_rss_gb": rss_gb("VmHWM")}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
