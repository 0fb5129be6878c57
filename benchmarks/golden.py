"""Parity of rankloss_tf with the real tensorflow-addons 0.23 and pytorch-metric-learning 2.9.

Builds a few batches (DESIGN.md's golden batch, tfa's docstring batch, random
P x K batches in shuffled order, a random N-pair batch, and an unnormalised batch
with singleton classes), computes the reference losses and their gradients in the
pinned environments of ``envs.py`` (``_golden_worker.py``), computes the same with
rankloss_tf (``rankloss_tf.losses`` and ``rankloss_tf.compat.tfa``) in this
interpreter, and reports the largest absolute differences of values and gradients.

Writes ``benchmarks/results/golden.json`` and ``golden.md``; exits 1 when a
difference passes the tolerance (1e-5 on values, 1e-4 on gradients, both
relative to max(1, |reference|)).

Usage::

    python benchmarks/golden.py
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402  (benchmarks/ is not a package)
from harness import results as results_file  # noqa: E402

VALUE_TOL = 1e-5
GRADIENT_TOL = 1e-4
DISTANCES = {"L2": "l2", "squared-L2": "squared_l2", "angular": "cosine"}

GOLDEN_EMBEDDINGS = [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0.6, 0, 0.8], [-0.6, -0.8, 0]]
GOLDEN_LABELS = [0, 0, 1, 1, 2, 2]
# DESIGN.md's table: (loss, params) -> value on the golden batch.
DESIGN_VALUES = {
    ("semihard", (("distance_metric", "L2"), ("margin", 1.0))): 0.81385547,
    ("semihard", (("distance_metric", "squared-L2"), ("margin", 1.0))): 0.7,
    ("semihard", (("distance_metric", "angular"), ("margin", 1.0))): 0.8333333,
    ("semihard", (("distance_metric", "L2"), ("margin", 0.2))): 0.093967654,
    ("semihard", (("distance_metric", "squared-L2"), ("margin", 0.2))): 0.15333334,
    ("semihard", (("distance_metric", "angular"), ("margin", 0.2))): 0.10666666,
    ("hard", (("distance_metric", "L2"), ("margin", 1.0), ("soft", False))): 1.0419079,
    ("hard", (("distance_metric", "squared-L2"), ("margin", 1.0), ("soft", False))): 1.1733333,
    ("hard", (("distance_metric", "angular"), ("margin", 1.0), ("soft", False))): 1.0866667,
    ("hard", (("distance_metric", "L2"), ("margin", 1.0), ("soft", True))): 0.730117,
    ("hard", (("distance_metric", "squared-L2"), ("margin", 1.0), ("soft", True))): 0.8600638,
    ("hard", (("distance_metric", "angular"), ("margin", 1.0), ("soft", True))): 0.7584966,
    ("npairs", ()): 1.0450543,
    ("angular", (("alpha", 40),)): 1.6044104,
    ("angular", (("alpha", 45),)): 2.0181359,
}


def make_cases(seed=0):
    """{name: (labels int32 [B], embeddings float32 [B, D])}."""
    rng = np.random.default_rng(seed)

    def unit(rows, dim):
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    order = rng.permutation(32)
    return {
        "golden": (np.array(GOLDEN_LABELS, np.int32), np.array(GOLDEN_EMBEDDINGS, np.float32)),
        "tfa_docstring": (np.array([0, 0], np.int32), np.array([[0, 1], [1, 0]], np.float32)),
        "random_pk_8x4": (np.repeat(np.arange(8), 4).astype(np.int32)[order], unit(32, 8)),
        "random_npair_16x2": (np.repeat(np.arange(16), 2).astype(np.int32), unit(32, 8)),
        "random_raw_singletons": (rng.integers(0, 9, 24).astype(np.int32),
                                  2.0 * rng.standard_normal((24, 5)).astype(np.float32)),
    }


def references(which, path):
    """Rows of reference values/gradients computed in environment ``which``."""
    out = subprocess.run(
        [str(envs.venv_python(which)), str(HERE / "_golden_worker.py"), which, str(path)],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"The {which} reference failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def ours_functions(loss, params):
    """{label: f(labels, embeddings) -> scalar tensor} of rankloss_tf for a reference row."""
    import tensorflow as tf

    from rankloss_tf import losses
    from rankloss_tf.compat import tfa as compat
    from rankloss_tf.ops.distances import pairwise_distances

    def off_diagonal(matrix):
        return tf.boolean_mask(matrix, ~tf.eye(tf.shape(matrix)[0], dtype=tf.bool))

    if loss in ("semihard", "hard"):
        kwargs = {k: v for k, v in params.items() if k != "distance_metric"}
        ours_class = losses.TripletSemiHardLoss if loss == "semihard" else losses.TripletHardLoss
        compat_class = compat.TripletSemiHardLoss if loss == "semihard" else compat.TripletHardLoss
        ours = ours_class(distance=DISTANCES[params["distance_metric"]], **kwargs)
        tfa_like = compat_class(distance_metric=params["distance_metric"], **kwargs)
        return {"ours": ours, "compat.tfa": tfa_like}
    if loss == "contrastive":
        ours = losses.ContrastiveLoss(margin=params["margin"])
        tfa_like = compat.ContrastiveLoss(margin=params["margin"])

        def compat_contrastive(labels, embeddings):
            same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
            return tfa_like(off_diagonal(same), off_diagonal(pairwise_distances(embeddings, "l2")))

        return {"ours": ours, "compat.tfa": compat_contrastive}
    if loss == "npairs":
        ours = losses.NPairLoss(l2_reg=0.0)
        tfa_like = compat.NpairsLoss()

        def compat_npairs(labels, embeddings):
            return tfa_like(labels[0::2], tf.matmul(embeddings[0::2], embeddings[1::2], transpose_b=True))

        return {"ours": ours, "compat.tfa": compat_npairs}
    if loss == "angular":
        return {"ours": losses.AngularLoss(alpha=float(params["alpha"]))}
    raise ValueError(f"Unknown reference loss. Received: {loss!r}")


def hard_oracle(labels, embeddings, margin, soft, metric):
    """tfa's batch-hard triplet loss in float64 NumPy (anchors without a positive: d_ap = 0)."""
    if metric == "angular":
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        distances = np.maximum(1.0 - unit @ unit.T, 0.0)
    else:
        distances = np.maximum(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1), 0.0)
        if metric == "L2":
            distances = np.sqrt(distances)
    same = labels[:, None] == labels[None, :]
    positives = same & ~np.eye(len(labels), dtype=bool)
    hardest_positive = np.where(positives.any(1), np.where(positives, distances, -np.inf).max(1), 0.0)
    hardest_negative = np.where(same, np.inf, distances).min(1)
    gap = hardest_positive - hardest_negative
    return np.mean(np.log1p(np.exp(gap)) if soft else np.maximum(gap + margin, 0.0))


def numeric_gradient(function, embeddings, step=1e-6):
    """Central finite differences of a float64 function of the embeddings."""
    x = embeddings.astype(np.float64)
    gradient = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (function(plus) - function(minus)) / (2 * step)
    return gradient


def known_deviation(row, impl):
    """Why a row may differ from the reference by design or by a reference bug, else None."""
    params = row["params"]
    if (row["case"] == "golden" and row["loss"] == "semihard" and params["margin"] == 1.0
            and params["distance_metric"] in ("L2", "angular")):
        return ("gradient only: anchor 2 / positive 3 has two semi-hard negatives at the same "
                "distance (0 and 4); either choice is a valid subgradient")
    if row["case"] == "random_raw_singletons" and row["loss"] == "hard":
        if impl == "ours":
            return ("value: `losses.TripletHardLoss` leaves out anchors without a positive; "
                    "tfa (and `compat.tfa`) count them with d_ap = 0")
        if "fd_gradient_diff" in row and row["fd_gradient_diff"] > GRADIENT_TOL * max(1.0, abs(row["value"])):
            return "gradient only: tfa's gradient disagrees with finite differences (see fd columns)"
    return None


def compare(rows, cases):
    """Add ours' values and the differences to every reference row."""
    import tensorflow as tf

    for row in rows:
        labels, embeddings = cases[row["case"]]
        reference_gradient = np.array(row.pop("gradient"))
        if row["loss"] == "angular":
            # PML does not differentiate through the normalisation of the negatives; ours
            # normalises every row. On unit-norm rows the two agree after projecting onto
            # the tangent space of the sphere: g - (g . x) x.
            reference_gradient -= (reference_gradient * embeddings).sum(1, keepdims=True) * embeddings
        fd_gradient = None
        if row["loss"] == "hard":
            p = row["params"]
            fd_gradient = numeric_gradient(
                lambda x: hard_oracle(labels, x, p["margin"], p["soft"], p["distance_metric"]), embeddings)
            row["fd_gradient_diff"] = float(np.max(np.abs(reference_gradient - fd_gradient)))
        scale = max(1.0, abs(row["value"]))
        row["ours"] = {}
        for label, function in ours_functions(row["loss"], row["params"]).items():
            variable = tf.Variable(embeddings)
            with tf.GradientTape() as tape:
                value = function(tf.constant(labels), variable)
            gradient = tape.gradient(value, variable).numpy()
            value_diff = abs(float(value) - row["value"])
            gradient_diff = float(np.max(np.abs(gradient - reference_gradient)))
            result = {"value": float(value), "value_diff": value_diff, "gradient_diff": gradient_diff}
            if fd_gradient is not None:
                result["fd_gradient_diff"] = float(np.max(np.abs(gradient - fd_gradient)))
            result["ok"] = value_diff <= VALUE_TOL * scale and gradient_diff <= GRADIENT_TOL * scale
            if not result["ok"]:
                result["known"] = known_deviation(row, label)
            row["ours"][label] = result
        design = DESIGN_VALUES.get((row["loss"], tuple(sorted(row["params"].items()))))
        if row["case"] == "golden" and design is not None:
            row["design_value"] = design
            row["design_ok"] = abs(design - row["value"]) <= VALUE_TOL * scale
    return rows


def markdown(rows, versions):
    lines = [
        "# Parity with tensorflow-addons 0.23 and pytorch-metric-learning 2.9",
        "",
        "Produced by `python benchmarks/golden.py`. References ran in their pinned environments ("
        + "; ".join(versions) + "). For rankloss_tf's `losses` class (`ours`) and the `compat.tfa` "
        "drop-in: the absolute difference of the value and the largest absolute difference of the "
        "gradient with respect to the embeddings. `design`: DESIGN.md's golden value (golden batch). "
        "`fd`: largest difference of a gradient from float64 finite differences of a NumPy oracle "
        "(batch-hard rows). Angular gradients are compared on the sphere's tangent space (PML does "
        f"not differentiate through the normalisation of negatives). Tolerance: {VALUE_TOL:g} on values, "
        f"{GRADIENT_TOL:g} on gradients, times max(1, |value|).",
        "",
        "## Largest differences per loss (rows with an explained deviation left out)",
        "",
        "| loss | impl | rows | max value diff | max gradient diff | explained deviations |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    groups = {}
    for row in rows:
        for label, result in row["ours"].items():
            groups.setdefault((row["loss"], label), []).append(result)
    for (loss, label), results in groups.items():
        plain = [r for r in results if not r.get("known")] or [{"value_diff": 0.0, "gradient_diff": 0.0}]
        lines.append(
            f"| {loss} | {label} | {len(results)} | {max(r['value_diff'] for r in plain):.2e} | "
            f"{max(r['gradient_diff'] for r in plain):.2e} | {sum(bool(r.get('known')) for r in results)} |"
        )
    lines += ["", "## Every row", "",
              "| case | loss | params | reference | design | ours: value / grad diff | "
              "compat.tfa: value / grad diff | fd: reference / ours / compat.tfa | note |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        cells = [f"{row['ours'][k]['value_diff']:.1e} / {row['ours'][k]['gradient_diff']:.1e}"
                 if k in row["ours"] else "–" for k in ("ours", "compat.tfa")]
        design = f"{row['design_value']:.8g}" if "design_value" in row else ""
        fd = " / ".join([f"{row['fd_gradient_diff']:.1e}"] + [
            f"{row['ours'][k]['fd_gradient_diff']:.1e}" for k in ("ours", "compat.tfa")
        ]) if "fd_gradient_diff" in row else ""
        notes = "; ".join(sorted({f"{k}: {r['known']}" for k, r in row["ours"].items() if r.get("known")}))
        lines.append(f"| {row['case']} | {row['loss']} | {params} | {row['value']:.8g} | {design} | "
                     + " | ".join(cells) + f" | {fd} | {notes} |")
    return "\n".join(lines) + "\n"


def run(out_dir=HERE / "results"):
    """Compute, compare and write the reports; return the rows."""
    for name in ("tfa", "pml"):
        envs.ensure(name)
    cases = make_cases()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.npz"
        np.savez(path, **{f"{name}/{part}": array for name, pair in cases.items()
                          for part, array in zip(("labels", "embeddings"), pair)})
        rows = references("tfa", path) + references("pml", path)
    rows = compare(rows, cases)
    versions = [f"tfa: TensorFlow {envs.versions('tfa')}", f"pml: PyTorch {envs.versions('pml')}"]
    payload = {"environments": versions, "rows": rows}
    results_file.write(Path(out_dir) / "golden", payload, markdown(rows, versions))
    return rows


def failures(rows):
    """Human-readable lines for every row outside tolerance."""
    bad = []
    for row in rows:
        for label, result in row["ours"].items():
            if not result["ok"] and not result.get("known"):
                bad.append(f"{row['case']} {row['loss']} {row['params']} {label}: {result}")
        if row.get("design_ok") is False:
            bad.append(f"{row['case']} {row['loss']} {row['params']}: reference {row['value']} "
                       f"!= DESIGN.md {row['design_value']}")
    return bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    rows = run(args.out_dir)
    bad = failures(rows)
    print("\n".join(bad) if bad else f"All {len(rows)} reference rows match.")
    print(f"Wrote {Path(args.out_dir) / 'golden.md'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
