"""Omniglot zero-shot retrieval, every loss under one budget: the papers' comparison.

Reproduces the comparison of Wang et al. 2017 ("Deep Metric Learning with
Angular Loss", Tables 1-3) and Sohn 2016 ("Improved Deep Metric Learning with
Multi-class N-pair Loss Objective") on real data at hand: the Omniglot
zero-shot split (train alphabets Balinese, Early_Aramaic, Greek, Korean,
Latin: 136 classes; test alphabets Japanese_(katakana), Sanskrit, Tagalog:
106 classes, 2,120 images).

Every run is one ``rankloss_tf.app.train(TrainConfig(...))`` with the
library's defaults for Omniglot (small CNN, 32x32 images, 128-d embedding,
Adam 1e-3 with cosine decay) and the same budget for every loss (``--epochs``
epochs of 21 batches of 128 images). The losses keep their library defaults
(margin 1.0, l2 distance for triplet and contrastive; l2_reg 0.002 for N-pair;
lam 2 for N-pair + angular). Batches: 32 classes x 4 samples for triplet and
contrastive; Sohn's N-pair batch, 64 classes x 2 samples (same batch size), for
the N-pair, angular and N-pair + angular losses, as in both papers.

Test metrics: Recall@1/2/4/8 (query left out), NMI and F1 of k-means with
k = 106, mean +- std over the seeds. Results are rewritten after every run, so
an interrupted study still leaves a table; ``--resume`` skips the runs already
in the results file.

Writes benchmarks/results/reproduction.json, reproduction.md and
reproduction_recall1.png (``--quick``: .bench/reproduction.* instead).

Usage::

    python benchmarks/reproduction.py                    # 11 rows x 3 seeds
    python benchmarks/reproduction.py --quick            # 1 epoch, seed 0
    python benchmarks/reproduction.py --losses npair_mc npair_ovo --seeds 0 1 --epochs 8 --resume
"""

import argparse
import dataclasses
import datetime
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from rankloss_tf import losses
from rankloss_tf.app.recipes import RECIPES
from rankloss_tf.app import TrainConfig, train

from harness import machine, results as results_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "omniglot"
DEFAULT_EPOCHS = 16
COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "f1")
BATCH_SIZE = 128


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the table: a loss name of ``losses.LOSSES``, its options, and the batch shape.

    ``normalize=False``: the model outputs unnormalised embeddings (Sohn's N-pair setting).
    """

    label: str
    loss: str
    samples_per_class: int
    alpha: float = None
    loss_options: dict = None
    normalize: bool = None


# key -> Method; triplet / contrastive: 32 x 4; the N-pair batch (Sohn 2016): 64 x 2.
METHODS = {
    "triplet_semihard": Method("triplet semi-hard", "triplet_semihard", 4),
    "triplet_hard": Method("triplet hard", "triplet_hard", 4),
    "contrastive": Method("contrastive", "contrastive", 4),
    "npair_mc": Method("N-pair mc", "npair", 2),
    "npair_ovo": Method("N-pair ovo", "npair", 2, loss_options={"variant": "ovo"}),
    "angular_36": Method("angular (alpha 36)", "angular", 2, 36.0),
    "angular_45": Method("angular (alpha 45)", "angular", 2, 45.0),
    "angular_55": Method("angular (alpha 55)", "angular", 2, 55.0),
    "npair_angular": Method("N-pair + angular (alpha 45)", "npair_angular", 2, 45.0),
    "npair_mc_raw": Method("N-pair mc, unnormalised", "npair", 2, normalize=False),
    "npair_angular_raw": Method("N-pair + angular (alpha 45), unnormalised", "npair_angular", 2, 45.0,
                                normalize=False),
}
# Wang et al. 2017, Table 2 (Stanford Cars, fine-tuned GoogLeNet), Recall@1 in %
# (the figures benchmarks/cars196.py compares with).
PAPER_RECALL_AT_1 = {
    "triplet_semihard": 45.5, "npair_mc": 68.9, "angular_45": 71.3, "npair_angular": 71.4,
}
PAPER_ORDERINGS = [
    ("Wang et al. 2017 (Tables 1-2)", ["npair_angular", "angular_45", "npair_mc", "triplet_semihard"]),
    ("Sohn 2016 (Tables 1-2)", ["npair_mc", "npair_ovo", "triplet_semihard"]),
]


def run_one(method, seed, epochs, data_dir, runs_dir):
    """Metrics (in %) and wall time of one training run."""
    config = TrainConfig(
        dataset="omniglot",
        data_dir=str(data_dir),
        loss=method.loss,
        loss_options=method.loss_options,
        alpha=method.alpha,
        normalize=method.normalize,
        classes_per_batch=BATCH_SIZE // method.samples_per_class,
        samples_per_class=method.samples_per_class,
        epochs=epochs,
        seed=seed,
        out_dir=str(Path(runs_dir) / f"{method.loss}_{method.alpha}_{method.loss_options}_{method.normalize}_{seed}"),
        plots=False,
        export_dir=None,
        verbose=0,
    )
    start = time.perf_counter()
    result = train(config)
    row = {name: 100.0 * float(result.metrics[name]) for name in COLUMNS}
    row["seconds"] = time.perf_counter() - start
    row["fit_seconds"] = result.seconds["fit"]
    row["steps"] = int(result.model.optimizer.iterations.numpy())
    return row


def summarise(runs):
    """{method key: {column: [mean, std]}} over the seeds run so far."""
    summary = {}
    for key, by_seed in runs.items():
        rows = list(by_seed.values())
        summary[key] = {name: [float(np.mean([r[name] for r in rows])), float(np.std([r[name] for r in rows]))]
                        for name in (*COLUMNS, "seconds")}
        summary[key]["seeds"] = len(rows)
    return summary


def ordering(summary, keys):
    """``keys`` that were run, sorted by mean Recall@1 (best first)."""
    return sorted((k for k in keys if k in summary), key=lambda k: -summary[k]["recall@1"][0])


def comparison(summary):
    """Paper ordering vs ours, per paper: (paper, paper order, our order of the same methods, agreeing pairs)."""
    lines = []
    for paper, order in PAPER_ORDERINGS:
        ours = ordering(summary, order)
        kept = [k for k in order if k in ours]
        if len(kept) < 2:
            continue
        pairs = [(a, b) for i, a in enumerate(kept) for b in kept[i + 1:]]
        agree = sum(ours.index(a) < ours.index(b) for a, b in pairs)
        lines.append(
            f"- {paper}: " + " > ".join(METHODS[k].label for k in kept)
            + "; here: " + " > ".join(f"{METHODS[k].label} {summary[k]['recall@1'][0]:.1f}" for k in ours)
            + f" ({agree} of {len(pairs)} pairwise orderings agree)."
        )
    return lines


def markdown(record, discussion):
    summary, settings = record["summary"], record["settings"]
    seeds = ", ".join(map(str, settings["seeds"]))
    lines = [
        "# Omniglot zero-shot retrieval: every loss under one budget",
        "",
        "Train alphabets Balinese, Early_Aramaic, Greek, Korean, Latin (136 classes, 2,720 images); "
        "test alphabets Japanese_(katakana), Sanskrit, Tagalog (106 classes, 2,120 images). "
        f"Each run: `train(TrainConfig(dataset=\"omniglot\", ...))` with the default small CNN, 32x32 images, "
        f"128-d embedding, Adam {settings['learning_rate']} with cosine decay, {settings['epochs']} epochs x "
        f"{settings['steps_per_epoch']} batches of {BATCH_SIZE} images ({settings['epochs'] * settings['steps_per_epoch']} "
        f"steps; the library's default Omniglot run is {RECIPES['omniglot'].epochs} epochs with augmentation). Seeds {seeds}; mean +- std over the seeds, in %.",
        "",
        "| loss | batch P x K | seeds | R@1 | R@2 | R@4 | R@8 | NMI | F1 | wall s / run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, method in METHODS.items():
        if key not in summary:
            continue
        stats = summary[key]
        cells = " | ".join(f"{stats[name][0]:.1f} +- {stats[name][1]:.1f}" for name in COLUMNS)
        batch = f"{BATCH_SIZE // method.samples_per_class} x {method.samples_per_class}"
        lines.append(f"| {method.label} | {batch} | {stats['seeds']} | {cells} | {stats['seconds'][0]:.0f} |")
    lines += [
        "",
        "Notes: all losses keep the library defaults (triplet semi-hard / hard and contrastive: margin 1.0, "
        "non-squared l2 distance on L2-normalised embeddings; N-pair: l2_reg 0.002; N-pair + angular: lam 2). "
        "Triplet and contrastive train on 32 classes x 4 samples; the N-pair, angular and N-pair + angular "
        "losses on Sohn's N-pair batch, 64 classes x 2 samples, so every batch holds 128 images. "
        "Wall time: the whole `train` call (data loading, fit, test embedding, k-means) on "
        f"{record['machine']['description']}.",
        "",
        "## Ordering by Recall@1 vs the papers",
        "",
        *comparison(summary),
        "",
        "For scale, Wang et al. 2017, Table 2 (Stanford Cars, fine-tuned ImageNet GoogLeNet, far larger "
        "budget), Recall@1: " + ", ".join(f"{METHODS[k].label} {v}" for k, v in PAPER_RECALL_AT_1.items())
        + ". Sohn 2016 reports N-pair-mc above N-pair-ovo above triplet on every data set of its tables.",
    ]
    if discussion:
        lines += ["", discussion]
    return "\n".join(lines) + "\n"


def plot(record, path):
    """Recall@1 per loss: bars of the mean, +- std, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in METHODS if k in record["runs"]]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    means = [record["summary"][k]["recall@1"][0] for k in keys]
    stds = [record["summary"][k]["recall@1"][1] for k in keys]
    colours = ["tab:blue" if METHODS[k].samples_per_class == 4 else "tab:orange" for k in keys]
    axes.bar(range(len(keys)), means, yerr=stds, color=colours, capsize=4, alpha=0.8)
    for i, key in enumerate(keys):
        values = [r["recall@1"] for r in record["runs"][key].values()]
        axes.plot([i] * len(values), values, "k.", markersize=5)
    axes.set_xticks(range(len(keys)))
    axes.set_xticklabels([METHODS[k].label for k in keys], rotation=30, ha="right")
    low = min(min(r["recall@1"] for r in by_seed.values()) for by_seed in record["runs"].values())
    axes.set_ylim(max(0.0, low - 10.0), min(100.0, max(m + s for m, s in zip(means, stds)) + 5.0))
    axes.set_ylabel("test Recall@1 (%)")
    settings = record["settings"]
    axes.set_title(f"Omniglot zero-shot, small CNN, {settings['epochs']} epochs, "
                   f"seeds {', '.join(map(str, settings['seeds']))} (blue: 32 x 4, orange: 64 x 2 batches)")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def describe_machine():
    found, gpus = machine.describe(), len(tf.config.list_physical_devices("GPU"))
    return {**found, "gpus": gpus, "description": f"{found['cpus']} CPU cores, {gpus} GPU, "
                                                  f"TensorFlow {found['tensorflow']}, {found['platform']}"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="the Omniglot zips")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--out", default=None, help="results path without suffix (default benchmarks/results/reproduction)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the results file")
    parser.add_argument("--discussion", default=None, help="a text file that ends the Markdown (kept by --resume)")
    parser.add_argument("--quick", action="store_true", help="1 epoch, seed 0, results under .bench/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.epochs, args.seeds = 1, [0]
    out = Path(args.out or (ROOT / ".bench" / "reproduction" if args.quick else HERE / "results" / "reproduction"))
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")

    runs, discussion = {}, None
    if args.resume and json_path.is_file():
        previous = json.loads(json_path.read_text())
        if previous["settings"]["epochs"] == args.epochs:
            runs, discussion = previous["runs"], previous.get("discussion")
    if args.discussion:
        discussion = Path(args.discussion).read_text().strip()
    record = {
        "settings": {"epochs": args.epochs, "steps_per_epoch": 2720 // BATCH_SIZE, "learning_rate": 1e-3,
                     "batch_size": BATCH_SIZE, "seeds": args.seeds, "data_dir": str(args.data_dir)},
        "methods": {k: dataclasses.asdict(m) for k, m in METHODS.items()},
        "machine": describe_machine(),
        "runs": runs,
        "discussion": discussion,
    }

    def write():
        record["summary"] = summarise(record["runs"])
        record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        results_file.write(out, record, markdown(record, discussion))
        try:
            plot(record, out.parent / f"{out.name}_recall1.png")
        except ImportError as error:
            logging.warning("Plot skipped: %s", error)

    with tempfile.TemporaryDirectory(prefix="reproduction-") as runs_dir:
        for seed in args.seeds:
            for key in args.losses:
                if str(seed) in runs.get(key, {}):
                    continue
                row = run_one(METHODS[key], seed, args.epochs, args.data_dir, runs_dir)
                runs.setdefault(key, {})[str(seed)] = row
                logging.info("%s seed %d: R@1 %.1f, NMI %.1f, F1 %.1f, %.0f s", key, seed,
                             row["recall@1"], row["nmi"], row["f1"], row["seconds"])
                write()
    if runs:
        write()
        logging.info("\n%s", out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
