"""Cars196 (cropped) retrieval with a frozen ImageNet EfficientNet-Lite0: the papers' table.

The protocol of Song et al. 2016, Sohn 2016 (N-pair) and Wang et al. 2017 (angular,
Table 2): train on classes 1-98 (8,054 images), test retrieval on the unseen classes
99-196 (8,131 images); Recall@1/2/4/8 (cosine, query left out), NMI and F1 of
k-means with k = 98.

Here the backbone stays frozen (2 CPU cores): every image goes once through
EfficientNet-Lite0 with ImageNet weights (224x224 bounding-box crops, global
average pooling, 1280-d), the features are cached on disk, and a linear embedding
head (1280 -> 512) trains on them with each loss:

| method | loss | batch (P classes x K) | head output |
| --- | --- | --- | --- |
| frozen features | none: the 1280-d features themselves | - | - |
| triplet semi-hard | TripletSemiHardLoss(margin=0.2) | 32 x 4 | L2-normalised |
| N-pair mc | NPairLoss("mc", l2_reg=0.002) | 64 x 2 | raw |
| angular | AngularLoss(alpha=36 or 45) | 64 x 2 | raw (normalised inside) |
| N-pair + angular | NPairAngularLoss(alpha=45, lam=2) | 64 x 2 | raw |

Every method runs with the same seeds (head initialisation, batches, k-means),
Adam (learning rate 1e-4), 2,000 steps; the table gives mean +- std over the
seeds and the wall time of each run (training, test embedding, evaluation).

The images are the data's bounding-box crops, so the figures are for
"Cars196 (cropped)", easier than the papers' uncropped images, and the papers
fine-tune the whole network (GoogLeNet) where this trains a head only.

Writes benchmarks/results/cars196.json and cars196.md.

``--cli-default RUN`` instead runs what ``rankloss-tf train --dataset cars196
--data-dir DIR --out RUN --export RUN.export`` runs, with no other setting
(``rankloss_tf.app.train`` of the dataset's recipe: frozen Lite0, four
views, N-pair mc; a finished run is read back, not trained again), and
records its test metrics, wall times and load in the "CLI default" section
and the "cli_default" key of the results; ``--saved-metrics`` adds the
metrics ``rankloss-tf evaluate --json`` gave for the saved run and its export.

Usage: python benchmarks/cars196.py [--data-dir ../shared/data/cars196] [--seeds 0 1 2]
       [--steps 2000] [--cache-dir DIR] [--methods ...]
       python benchmarks/cars196.py --cli-default RUN [--saved-metrics run=RUN.json export=EXP.json]
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from rankloss_tf import app as training  # the application: TrainConfig, train
from rankloss_tf.evaluation import evaluate
from rankloss_tf.losses import AngularLoss, NPairAngularLoss, NPairLoss, TripletSemiHardLoss
from rankloss_tf.models import projection_head

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, results as results_file  # noqa: E402
from harness.training import fit, frozen_features  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cars196"
EMBEDDING_DIM = 512
LEARNING_RATE = 1e-4
COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "f1")
CLI_COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1")
CLI_SECTION = "## The CLI default"
# name -> (loss factory, P classes, K samples per class, L2-normalise the head's output)
METHODS = {
    "triplet semi-hard (m 0.2)": (lambda: TripletSemiHardLoss(margin=0.2), 32, 4, True),
    "N-pair mc": (lambda: NPairLoss(variant="mc", l2_reg=0.002), 64, 2, False),
    "angular (alpha 36)": (lambda: AngularLoss(alpha=36.0), 64, 2, False),
    "angular (alpha 45)": (lambda: AngularLoss(alpha=45.0), 64, 2, False),
    "N-pair + angular (alpha 45, lam 2)": (lambda: NPairAngularLoss(alpha=45.0, lam=2.0), 64, 2, False),
}
# Wang et al. 2017, Table 2 (Cars196, uncropped, fine-tuned GoogLeNet), Recall@1.
PAPER_RECALL_AT_1 = {
    "triplet semi-hard (m 0.2)": 45.5,
    "N-pair mc": 68.9,
    "angular (alpha 45)": 71.3,
    "N-pair + angular (alpha 45, lam 2)": 71.4,
}


def cached_features(data_dir, split, cache_dir):
    """(features [N, 1280], labels [N], seconds) of one half, through the feature cache ``rankloss-tf train`` uses."""
    watch = machine.Stopwatch()
    features, labels = frozen_features("cars196", data_dir, split, view_sizes=(224,), mirror_views=False,
                                       cache_dir=cache_dir, pooling="avg")["plain"]  # the table's, not the recipe's
    return features, labels, watch.seconds


def train_method_head(train, method, seed, steps):
    """A linear 1280 -> 512 embedding head trained on cached features with one loss."""
    make_loss, classes_per_batch, samples_per_class, normalise = METHODS[method]
    features, labels = train
    return fit(lambda: projection_head(features.shape[1], EMBEDDING_DIM, normalize=normalise), make_loss(), features,
               labels, learning_rate=LEARNING_RATE, steps=steps, classes_per_batch=classes_per_batch,
               samples_per_class=samples_per_class, seed=seed)


def run(train, test, method, seed, steps):
    """Metrics (in %) and wall time of one method and seed."""
    watch = machine.Stopwatch()
    if method is None:
        embeddings = test[0]
    else:
        embeddings = train_method_head(train, method, seed, steps).predict(test[0], batch_size=1024, verbose=0)
    metrics = evaluate(embeddings, test[1], ks=(1, 2, 4, 8), seed=seed)
    result = {name: 100.0 * metrics[name] for name in COLUMNS}
    result["seconds"] = watch.seconds
    return result


def summarise(runs):
    """{column: (mean, std)} over the runs of one method."""
    return {name: (float(np.mean([r[name] for r in runs])), float(np.std([r[name] for r in runs])))
            for name in (*COLUMNS, "seconds")}


def markdown(summary, extraction, args):
    lines = [
        "# Cars196 (cropped): frozen ImageNet EfficientNet-Lite0 + embedding head",
        "",
        f"Train classes 1-98 ({extraction['train']['images']} images), test classes 99-196 "
        f"({extraction['test']['images']} images); {len(args.seeds)} seeds "
        f"({', '.join(map(str, args.seeds))}), mean +- std, in %. Head: linear 1280 -> {EMBEDDING_DIM}, "
        f"Adam {LEARNING_RATE}, {args.steps} steps. Wall time per run on {machine.describe()['cpus']} CPU cores "
        "(head training + test embedding + evaluation; features cached).",
        "",
        "| method | R@1 | R@2 | R@4 | R@8 | NMI | F1 | wall s | paper R@1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, stats in summary.items():
        cells = [f"{stats[name][0]:.1f} +- {stats[name][1]:.1f}" for name in COLUMNS]
        paper = PAPER_RECALL_AT_1.get(method)
        lines.append(f"| {method} | {' | '.join(cells)} | {stats['seconds'][0]:.0f} | "
                     f"{'-' if paper is None else paper} |")
    lines += [
        "",
        "Paper R@1: Wang et al. 2017, Table 2 (uncropped images, fine-tuned GoogLeNet).",
        "",
        "Ordering by mean R@1, here: " + " > ".join(
            f"{method} {summary[method]['recall@1'][0]:.1f}"
            for method in sorted(summary, key=lambda m: -summary[m]["recall@1"][0])
        ) + ".",
        "In the paper: " + " > ".join(
            f"{method} {r1}" for method, r1 in sorted(PAPER_RECALL_AT_1.items(), key=lambda item: -item[1])
        ) + ".",
        "",
        "Feature extraction (EfficientNet-Lite0, 224x224, batch 64): "
        + "; ".join(
            f"{split} {e['images']} images "
            + (f"in {e['seconds']:.0f} s ({e['images'] / e['seconds']:.1f} images/s)" if not e["cached"]
               else "from the cache")
            for split, e in extraction.items()
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def cli_default(data_dir, run_dir, saved_metrics, seed=0):
    """Runs (or reads back) the CLI default on Cars196 (``--seed``: ``seed``); its record for the results."""
    config = training.TrainConfig(dataset="cars196", data_dir=data_dir, out_dir=str(run_dir),
                                  export_dir=f"{run_dir}.export", seed=seed)
    watch = machine.Stopwatch()
    result = training.train(config)
    record = {"metrics": result.metrics, "seconds": result.seconds, "resumed": result.resumed,
              "this_call_seconds": watch.seconds, "load_before": watch.load_before, "load_after": machine.load(), "config": {k: v for k, v in vars(config.resolved()).items()},
              "saved": {}}
    for item in saved_metrics:
        name, _, path = item.partition("=")
        record["saved"][name] = json.loads(Path(path).read_text())
    return record


def _pooling(config):
    """How the run pooled the backbone's last feature map, in words (runs recorded before pooling: average)."""
    if config.get("pooling", "avg") == "gem":
        return f"GeM pooling, p = {config.get('gem_power', 3.0):g}"
    return "average pooling"


def cli_markdown(record):
    config, metrics = record["config"], record["metrics"]
    lines = [
        CLI_SECTION, "",
        "`rankloss-tf train --dataset cars196 --data-dir DIR --out RUN --export EXP`, no other flag: "
        f"frozen ImageNet {config['backbone']} ({_pooling(config)}), views {config['view_sizes']} x "
        f"{'(image, mirror)' if config['mirror_views'] else '(image)'} (the head trains on every view's features, "
        f"an image is embedded from their mean), linear head {config['embedding_dim']}-d, {config['loss']} "
        f"{config['loss_options']}, P x K {config['classes_per_batch']} x {config['samples_per_class']}, Adam "
        f"{config['learning_rate']} cosine-decayed over {config['epochs']} epochs, seed {config['seed']}. "
        "Chosen on validation classes 74-98 (`cars196_recipe.md`). Test classes 99-196 (8,131 images).", "",
        "| model | " + " | ".join(CLI_COLUMNS) + " |",
        "| --- " * (len(CLI_COLUMNS) + 1) + "|",
        "| reported by train | " + " | ".join(f"{metrics[k]:.4f}" for k in CLI_COLUMNS) + " |",
    ]
    for name, saved in record["saved"].items():
        lines.append(f"| `rankloss-tf evaluate` on the {name} | "
                     + " | ".join(f"{saved[k]:.4f}" for k in CLI_COLUMNS) + " |")
    others = record.get("other_seeds", [])
    for other in others:
        lines.append(f"| reported by train, `--seed {other['config']['seed']}` | "
                     + " | ".join(f"{other['metrics'][k]:.4f}" for k in CLI_COLUMNS) + " |")
    if others:
        runs = [record, *others]
        lines.append(f"| mean of the {len(runs)} seeds | "
                     + " | ".join(f"{np.mean([r['metrics'][k] for r in runs]):.4f}" for k in CLI_COLUMNS) + " |")
    seconds = record["seconds"]
    lines += ["", f"Wall time of the run: {seconds['total']:.0f} s ({seconds['fit']:.0f} s to the fitted model, "
              f"frozen features extracted or read from the cache; evaluation, plots and export {seconds['evaluate']:.0f} s) on "
              f"{machine.describe()['cpus']} shared CPU cores, 1-min load {record['load_before'][0]:.1f} before / "
              f"{record['load_after'][0]:.1f} after."
              + (" (This call read back a finished run.)" if record["resumed"] == "finished" else "")]
    return "\n".join(lines) + "\n"


def _write_results(key, value, table, section):
    """Updates one key of cars196.json and one part of cars196.md (comparison table or CLI section)."""
    md_path = RESULTS / "cars196.md"
    results = results_file.read(RESULTS / "cars196", {})
    results.update(json.loads(json.dumps(value if key is None else {key: value}, default=str)))
    text = md_path.read_text() if md_path.is_file() else ""
    comparison, _, cli = text.partition(CLI_SECTION)
    cli = CLI_SECTION + cli if cli else ""
    if section == "cli":
        cli = table
    else:
        comparison = table
    results_file.write(RESULTS / "cars196", results, comparison.rstrip("\n") + "\n\n" + cli if cli else comparison)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/rankloss_tf/features)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--cli-default", metavar="RUN", help="run the CLI default into RUN (export RUN.export)")
    parser.add_argument("--saved-metrics", nargs="*", default=[], metavar="NAME=JSON",
                        help="metrics of `rankloss-tf evaluate --json` on the saved run / export")
    parser.add_argument("--cli-seeds", type=int, nargs="+", default=[0],
                        help="with --cli-default: the seeds (the first into RUN, the others into RUN-seedN)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cli_default:
        record = cli_default(args.data_dir, args.cli_default, args.saved_metrics, args.cli_seeds[0])
        record["other_seeds"] = [cli_default(args.data_dir, f"{args.cli_default}-seed{seed}", [], seed)
                                 for seed in args.cli_seeds[1:]]
        json_path = RESULTS / "cars196.json"
        previous = json.loads(json_path.read_text()).get("cli_default") if json_path.is_file() else None
        if record["resumed"] == "finished" and previous:  # read back: keep the load of the call that trained
            record.update({k: previous[k] for k in ("load_before", "load_after", "this_call_seconds", "resumed")})
        table = cli_markdown(record)
        _write_results("cli_default", record, table, "cli")
        logging.info("\n%s", table)
        return

    train_features, train_labels, train_seconds = cached_features(args.data_dir, "train", args.cache_dir)
    test_features, test_labels, test_seconds = cached_features(args.data_dir, "test", args.cache_dir)
    extraction = {
        split: {"images": len(labels), "seconds": seconds, "cached": seconds < 30.0}
        for split, labels, seconds in (("train", train_labels, train_seconds), ("test", test_labels, test_seconds))
    }
    train, test = (train_features, train_labels), (test_features, test_labels)

    runs = {"frozen features (no training)": [run(train, test, None, seed, args.steps) for seed in args.seeds]}
    for method in args.methods:
        runs[method] = []
        for seed in args.seeds:
            runs[method].append(run(train, test, method, seed, args.steps))
            logging.info("%s, seed %d: %s", method, seed,
                         {k: round(v, 2) for k, v in runs[method][-1].items()})
    summary = {method: summarise(method_runs) for method, method_runs in runs.items()}
    table = markdown(summary, extraction, args)
    _write_results(None, {"runs": runs, "summary": summary, "extraction": extraction, "steps": args.steps,
                          "seeds": args.seeds, "machine": machine.describe()},
                   table, "comparison")
    logging.info("\n%s", table)


if __name__ == "__main__":
    main()
