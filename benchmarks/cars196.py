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

Usage: python benchmarks/cars196.py [--data-dir ../shared/data/cars196] [--seeds 0 1 2]
       [--steps 2000] [--cache-dir DIR] [--methods ...]
"""

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from rankloss_tf.datasets import load
from rankloss_tf.evaluation import evaluate
from rankloss_tf.frozen_backbone import backbone_features, train_head
from rankloss_tf.losses import AngularLoss, NPairAngularLoss, NPairLoss, TripletSemiHardLoss

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cars196"
BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = 224
EMBEDDING_DIM = 512
LEARNING_RATE = 1e-4
COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "f1")
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
    """(features [N, 1280], labels [N], seconds) of one half, through the feature cache."""
    start = time.perf_counter()
    features, labels = backbone_features(
        load("cars196", split, data_dir=data_dir),
        BACKBONE,
        IMAGE_SIZE,
        "imagenet",
        dataset_id=f"cars196:{Path(data_dir).resolve()}:{split}",
        cache_dir=cache_dir,
    )
    return features, labels, time.perf_counter() - start


def train_method_head(train, method, seed, steps):
    """A linear 1280 -> 512 embedding head trained on cached features with one loss."""
    make_loss, classes_per_batch, samples_per_class, normalise = METHODS[method]
    head, _ = train_head(*train, make_loss(), EMBEDDING_DIM, classes_per_batch, samples_per_class,
                         steps_per_epoch=steps, learning_rate=LEARNING_RATE, normalize=normalise, seed=seed)
    return head


def run(train, test, method, seed, steps):
    """Metrics (in %) and wall time of one method and seed."""
    start = time.perf_counter()
    if method is None:
        embeddings = test[0]
    else:
        embeddings = train_method_head(train, method, seed, steps).predict(test[0], batch_size=1024, verbose=0)
    metrics = evaluate(embeddings, test[1], ks=(1, 2, 4, 8), seed=seed)
    result = {name: 100.0 * metrics[name] for name in COLUMNS}
    result["seconds"] = time.perf_counter() - start
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
        f"Adam {LEARNING_RATE}, {args.steps} steps. Wall time per run on {os.cpu_count()} CPU cores "
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/rankloss_tf/features)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

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

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cars196.json").write_text(json.dumps(
        {"runs": runs, "summary": summary, "extraction": extraction, "steps": args.steps,
         "seeds": args.seeds, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}},
        indent=1,
    ))
    table = markdown(summary, extraction, args)
    (RESULTS / "cars196.md").write_text(table)
    logging.info("\n%s", table)


if __name__ == "__main__":
    main()
