"""A fair comparison of the losses: the same tuning budget for each, then 5 seeds on test classes.

Musgrave, Belongie and Lim (2020), "A Metric Learning Reality Check", show that
loss tables with per-paper settings mostly measure the settings. Here every
loss gets the same Optuna budget (TPE sampler, ``--trials`` trials, seeded)
over its own hyper-parameters, the learning rate and the P x K split of a
fixed batch of 128, scored on validation classes only; the best setting of
each loss is then trained on all training classes with 5 seeds and scored on
the test classes: Recall@1/2/4/8, MAP@R, NMI, F1, mean +- std.

Cars196 (cropped), frozen ImageNet EfficientNet-Lite0 features (224, cached,
as in benchmarks/cars196.py), a linear 1280 -> 512 head:
- search: train classes 1-73, validation classes 74-98 (Recall@1);
- final: train classes 1-98, test classes 99-196.

Search spaces (same budget for all):

| loss | own parameters | shared |
| --- | --- | --- |
| contrastive | margin in [0.1, 1.5] | lr in [1e-5, 3e-3] (log), K in {2, 4, 8} (P = 128 / K) |
| triplet_semihard | margin in [0.01, 1.0] | same |
| triplet_hard | margin in [0.01, 1.0] | same |
| npair | l2_reg in [1e-4, 1e-1] (log) | same |
| angular | alpha in [25, 55] degrees | same |
| npair_angular | alpha in [25, 55], lam in [0.25, 4] (log) | same |

Margin losses see L2-normalised head outputs (distance l2); the N-pair and
angular losses see the raw outputs (N-pair's dot products are meant on
unnormalised embeddings, Sohn 2016; angular normalises inside). Retrieval is
cosine for all.

Writes benchmarks/results/fair_comparison.{json,md,png} (``--quick``: .bench/).

Usage::

    python benchmarks/fair_comparison.py --trials 10 --steps 1000 --seeds 0 1 2 3 4
    python benchmarks/fair_comparison.py --quick
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

from rankloss_tf import losses
from rankloss_tf.data import pk_batches
from rankloss_tf.evaluation import evaluate
from rankloss_tf.models import projection_head

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cars196"
BATCH_SIZE = 128
EMBEDDING_DIM = 512
VALIDATION_FROM = 73  # labels 73..97 = classes 74-98
COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1")
NORMALISED = {"contrastive": True, "triplet_semihard": True, "triplet_hard": True,
              "npair": False, "angular": False, "npair_angular": False}
LOSSES = tuple(NORMALISED)


def suggest(trial, loss):
    """Optuna suggestions for one loss: (loss kwargs, learning rate, K)."""
    if loss in ("contrastive", "triplet_semihard", "triplet_hard"):
        high = 1.5 if loss == "contrastive" else 1.0
        params = {"margin": trial.suggest_float("margin", 0.1 if loss == "contrastive" else 0.01, high)}
    elif loss == "npair":
        params = {"l2_reg": trial.suggest_float("l2_reg", 1e-4, 1e-1, log=True)}
    else:
        params = {"alpha": trial.suggest_float("alpha", 25.0, 55.0)}
        if loss == "npair_angular":
            params["lam"] = trial.suggest_float("lam", 0.25, 4.0, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True)
    samples_per_class = trial.suggest_categorical("samples_per_class", [2, 4, 8])
    return params, learning_rate, samples_per_class


def train_head(features, labels, loss, params, learning_rate, samples_per_class, steps, seed, batch_size=BATCH_SIZE):
    """A linear head trained with one loss and setting (P = batch_size / K); returns it."""
    keras.utils.set_random_seed(seed)
    head = projection_head(features.shape[1], EMBEDDING_DIM, normalize=NORMALISED[loss])
    head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=losses.get(loss, **params))
    batches = pk_batches(features, labels, classes_per_batch=batch_size // samples_per_class,
                         samples_per_class=samples_per_class, seed=seed)
    head.fit(batches, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return head


def score(head, features, labels, clustering, seed):
    embeddings = head.predict(features, batch_size=2048, verbose=0)
    if not np.all(np.isfinite(embeddings)):
        return None
    return evaluate(embeddings, labels, clustering=clustering, seed=seed)


def tune(loss, train, validation, trials, steps, seed, batch_size=BATCH_SIZE):
    """Runs the search; returns (best setting, all trials)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        params, learning_rate, k = suggest(trial, loss)
        head = train_head(*train, loss, params, learning_rate, k, steps, seed, batch_size)
        metrics = score(head, *validation, clustering=False, seed=seed)
        return 0.0 if metrics is None else metrics["recall@1"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    history = [{"params": t.params, "recall@1": t.value} for t in study.trials]
    return study.best_trial.params, study.best_value, history


def split_setting(loss, best):
    params = {k: v for k, v in best.items() if k not in ("learning_rate", "samples_per_class")}
    return params, best["learning_rate"], best["samples_per_class"]


def cached_features(data_dir, split):
    from cars196_recipe import view_features

    return view_features(data_dir, split, "plain")


def markdown(results, args):
    lines = ["# A fair comparison of the losses (Cars196 cropped, frozen EfficientNet-Lite0)", "",
             f"Every loss: {args.trials} Optuna TPE trials (seed {args.tune_seed}) over its own parameters, the "
             f"learning rate (Adam, constant) and K (P = {BATCH_SIZE} / K), {args.steps} steps per trial, linear "
             f"1280 -> {EMBEDDING_DIM} head on cached 224 features; search trained on classes 1-73 and scored "
             "by Recall@1 on classes 74-98. The best setting of each loss was then trained on classes 1-98 with "
             f"seeds {', '.join(map(str, args.seeds))} ({args.steps} steps) and scored on classes 99-196 "
             "(8,131 images); mean +- std in %. 2 shared CPU cores.", "",
             "| loss | best setting | val R@1 | " + " | ".join(c.upper().replace("RECALL@", "R@") for c in COLUMNS)
             + " | tune s |", "| --- " * (len(COLUMNS) + 4) + "|"]
    order = sorted(results, key=lambda name: -results[name]["summary"]["recall@1"][0])
    for name in order:
        r = results[name]
        setting = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["best"].items())
        cells = [f"{100 * r['summary'][c][0]:.1f} +- {100 * r['summary'][c][1]:.1f}" for c in COLUMNS]
        lines.append(f"| {name} | {setting} | {100 * r['validation_recall@1']:.1f} | {' | '.join(cells)} | "
                     f"{r['tune_seconds']:.0f} |")
    lines += ["", "Ordering by test R@1: " + " > ".join(
        f"{name} {100 * results[name]['summary']['recall@1'][0]:.1f}" for name in order) + ".", ""]
    lines += agreement(results)
    return "\n".join(lines) + "\n"


# Orderings the papers report (best first), over the losses they compare.
PAPER_ORDERS = {
    "Wang et al. 2017 (Tables 1-3)": ("npair_angular", "angular", "npair", "triplet_semihard"),
    "Sohn 2016 (N-pair beats triplet and contrastive)": ("npair", "triplet_semihard", "contrastive"),
}


def agreement(results):
    """Lines saying where the tuned ordering agrees with the papers' and the Reality Check's findings."""
    r1 = {name: results[name]["summary"]["recall@1"] for name in results}
    lines = []
    for paper, order in PAPER_ORDERS.items():
        present = [name for name in order if name in r1]
        pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]]
        kept = [f"{a} > {b}" for a, b in pairs if r1[a][0] > r1[b][0]]
        broken = [f"{a} <= {b}" for a, b in pairs if r1[a][0] <= r1[b][0]]
        lines.append(f"- {paper}: agrees on {len(kept)} of {len(pairs)} pairs"
                     + (f"; disagrees on {', '.join(broken)}" if broken else "") + ".")
    if r1:
        means = sorted(v[0] for v in r1.values())
        spread = 100 * (means[-1] - means[0])
        top = max(r1, key=lambda name: r1[name][0])
        close = [name for name in r1 if r1[top][0] - r1[name][0] <= r1[top][1] + r1[name][1]]
        lines.append(f"- Musgrave et al. 2020 (Reality Check: tuned losses end close together): test R@1 spans "
                     f"{spread:.1f} points; within one std sum of the best ({top}): {', '.join(sorted(close))}.")
    return lines


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(results, key=lambda name: -results[name]["summary"]["recall@1"][0])
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for offset, column in zip((-0.2, 0.0, 0.2), ("recall@1", "map@r", "nmi")):
        means = [100 * results[n]["summary"][column][0] for n in names]
        stds = [100 * results[n]["summary"][column][1] for n in names]
        axis.bar(np.arange(len(names)) + offset, means, 0.2, yerr=stds, label=column, capsize=2)
    axis.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    axis.set_ylabel("% (test classes 99-196)")
    axis.set_title("Tuned losses, frozen Lite0 features, Cars196 (cropped)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--quick", action="store_true", help="2 trials, 50 steps, 1 seed, into .bench/")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.steps, args.seeds = 2, 50, [0]
    out = (HERE.parent / ".bench" if args.quick else HERE / "results") / "fair_comparison"
    out.parent.mkdir(parents=True, exist_ok=True)

    features, labels = cached_features(args.data_dir, "train")
    test = cached_features(args.data_dir, "test")
    search_train = (features[labels < VALIDATION_FROM], labels[labels < VALIDATION_FROM])
    validation = (features[labels >= VALIDATION_FROM], labels[labels >= VALIDATION_FROM])
    json_path = out.with_suffix(".json")
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    results = previous.get("results", {}) if previous.get("settings", {}).get("steps") == args.steps else {}
    for loss in args.losses:
        started = time.perf_counter()
        best, best_value, history = tune(loss, search_train, validation, args.trials, args.steps, args.tune_seed)
        tune_seconds = time.perf_counter() - started
        params, learning_rate, k = split_setting(loss, best)
        runs = []
        for seed in args.seeds:
            head = train_head(features, labels, loss, params, learning_rate, k, args.steps, seed)
            runs.append(score(head, *test, clustering=True, seed=seed))
        summary = {c: (float(np.mean([r[c] for r in runs])), float(np.std([r[c] for r in runs]))) for c in COLUMNS}
        results[loss] = {"best": best, "validation_recall@1": best_value, "trials": history, "runs": runs,
                         "summary": summary, "tune_seconds": tune_seconds,
                         "seconds": time.perf_counter() - started, "load": os.getloadavg()}
        record = {"settings": {"trials": args.trials, "steps": args.steps, "seeds": args.seeds,
                               "tune_seed": args.tune_seed, "batch_size": BATCH_SIZE,
                               "embedding_dim": EMBEDDING_DIM},
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "results": results}
        json_path.write_text(json.dumps(record, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(results, args))
        print(loss, best, round(best_value, 4), {c: round(v[0], 4) for c, v in summary.items()}, flush=True)
    plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
