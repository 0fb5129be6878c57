"""A fair comparison of the losses: the same tuning budget for each, then 5 seeds on test classes.

Musgrave, Belongie and Lim (2020), "A Metric Learning Reality Check", show that
loss tables with per-paper settings mostly measure the settings. Here every
loss gets the same Optuna budget (TPE sampler, ``--trials`` trials of
``--steps`` steps, seeded) over its own hyper-parameters, the learning rate and
the P x K split of a fixed batch of 128, scored by Recall@1 on validation
classes only; the best setting of each loss is then trained on all training
classes with 5 seeds and scored on the test classes: Recall@1/2/4/8, MAP@R,
NMI, F1 (and, on Omniglot, the 20 official 20-way one-shot runs), mean +- std.

One search / final / report path for both datasets; a ``Protocol`` says only
how a model is built, fed and scored:

- ``cars196``: Cars196 (cropped), frozen ImageNet EfficientNet-Lite0 features
  (224, average-pooled, cached, as in benchmarks/cars196_recipe.py), a linear 1280 -> 512 head,
  Adam at a constant learning rate. Search: train classes 1-73, validation
  classes 74-98; final: classes 1-98, test classes 99-196.
- ``omniglot``: the small CNN trained end to end at 32 x 32 (128-d), mild
  random affine augmentation (``random_affine`` defaults at 32 px), Adam with
  cosine decay. Search: train alphabets Balinese, Early_Aramaic, Greek, Latin,
  validation alphabet Korean (as benchmarks/omniglot_recipe.py); final: the
  five training alphabets, test alphabets Japanese_(katakana), Sanskrit,
  Tagalog, plus the official one-shot runs.

Search spaces (same budget for all; the learning-rate range is the protocol's):

| loss | own parameters | shared |
| --- | --- | --- |
| contrastive | margin in [0.1, 1.5] | lr (log), K in {2, 4, 8} (P = 128 / K) |
| triplet_semihard | margin in [0.01, 1.0] | same |
| triplet_hard | margin in [0.01, 1.0] | same |
| npair | l2_reg in [1e-4, 1e-1] (log) | same |
| angular | alpha in [25, 55] degrees | same |
| npair_angular | alpha in [25, 55], lam in [0.25, 4] (log) | same |
| multi_similarity | alpha in [0.5, 10] (log), beta in [10, 80], base in [0.3, 0.8] | same |
| supcon | temperature in [0.02, 0.5] (log) | same |
| ntxent | temperature in [0.02, 0.5] (log) | same |
| proxy_anchor | margin in [0, 0.3], alpha in [8, 64] (log) | same |
| proxy_nca | softmax_scale in [1, 32] (log) | same |
| arcface | margin in [10, 45] degrees, scale in [8, 64] (log) | same |
| cosface | margin in [0.1, 0.5], scale in [8, 64] (log) | same |

(``harness.tuning.SPACES``.) Margin losses, Multi-Similarity, SupCon and NT-Xent
see L2-normalised embeddings (distance l2; NT-Xent with labels is not SupCon
at another temperature: its denominator holds one positive and the negatives,
SupCon's every other sample); the N-pair and angular losses see the
raw outputs (N-pair's dot products are meant on unnormalised embeddings, Sohn
2016; angular normalises inside). Proxy-Anchor, ProxyNCA, ArcFace and CosFace
train one vector per class in a ``ClassCosines`` head on top of the embedding
model (``with_class_head``, trained at the same learning rate) and take its
cosines; only the embedding model is scored. Retrieval is cosine for all.

Writes benchmarks/results/fair_comparison_<dataset>.{json,md,png} (``--quick``:
a smoke run into .bench/). ``--resume`` keeps the losses already finished with
the same settings; ``--more-seeds`` trains the kept best setting of each loss with
the ``--seeds`` its runs lack (no new search), as a budget cut is made up later.

Usage::

    python benchmarks/fair_comparison.py --dataset omniglot       # 6 trials x 210 steps per loss
    python benchmarks/fair_comparison.py --dataset cars196        # 4 trials x 500 steps per loss
    python benchmarks/fair_comparison.py --dataset omniglot --quick
    python benchmarks/fair_comparison.py --dataset cars196 --report  # redraw .md/.png from .json
    python benchmarks/fair_comparison.py --dataset omniglot --losses supcon --more-seeds  # seeds 0-4 of supcon
"""

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np

from rankloss_tf import datasets, losses
from rankloss_tf.data.augment import augment_batches, random_affine
from rankloss_tf.evaluation import evaluate, one_shot_accuracy
from rankloss_tf.models import build_embedding_model, projection_head

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import machine, results as results_file, tuning  # noqa: E402
from harness.training import fit, frozen_features  # noqa: E402

SHARED_DATA = HERE.parent.parent / "shared" / "data"
BATCH_SIZE = 128
COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1")
HEADERS = {"recall@1": "R@1", "recall@2": "R@2", "recall@4": "R@4", "recall@8": "R@8", "map@r": "MAP@R",
           "nmi": "NMI", "f1": "F1", "one_shot": "one-shot (20 runs)"}
# Whether the model L2-normalises its output. Margin losses, Multi-Similarity and SupCon work on cosines; the
# class losses (proxies, ArcFace, CosFace) take the cosines of their head, so normalising changes nothing there.
NORMALISED = {"contrastive": True, "triplet_semihard": True, "triplet_hard": True,
              "npair": False, "angular": False, "npair_angular": False,
              "multi_similarity": True, "supcon": True, "ntxent": True, "proxy_anchor": True, "proxy_nca": True,
              "arcface": True, "cosface": True}
LOSSES = tuple(NORMALISED)
TPE_STARTUP = tuning.TPE_STARTUP


class Cars196:
    """Frozen Lite0 features (cached) and a linear head; classes 74-98 validate."""

    name = "cars196"
    title = "Cars196 cropped, frozen EfficientNet-Lite0"
    learning_rates = (1e-5, 3e-3)
    trials, steps = 4, 500  # the default budget per loss (about 20 min on 2 shared cores)
    extra_columns = ()
    embedding_dim = 512
    validation_from = 73  # labels 73..97 = classes 74-98
    text = ("linear 1280 -> 512 head on cached 224 features (average-pooled), Adam at a constant learning rate; "
            "search trained on classes 1-73 and scored by Recall@1 on classes 74-98; finals trained on classes 1-98 "
            "and scored on classes 99-196 (8,131 images)")

    def splits(self, data_dir):
        def plain(split):
            # The comparison's features stay average-pooled (as every committed result), whatever the recipe pools.
            return frozen_features("cars196", data_dir, split, view_sizes=(224,), mirror_views=False,
                                   pooling="avg")["plain"]

        features, labels = plain("train")
        held = labels >= self.validation_from
        return {"search": (features[~held], labels[~held]), "validation": (features[held], labels[held]),
                "train": (features, labels), "test": plain("test")}

    def model(self, input_shape, loss):
        return projection_head(input_shape[0], self.embedding_dim, normalize=NORMALISED[loss])

    def batches(self, seed):
        return None

    def learning_rate(self, value, steps):
        return value

    def extras(self, model, data_dir):
        return {}


class Omniglot:
    """The small CNN end to end at 32 x 32 with random affine; Korean validates; official one-shot runs."""

    name = "omniglot"
    title = "Omniglot, small CNN end to end at 32 x 32"
    learning_rates = (1e-4, 1e-2)
    trials, steps = 6, 210  # 10 epochs of 21 batches per run
    extra_columns = ("one_shot",)
    embedding_dim = 128
    image_size = 32
    text = ("small CNN trained end to end at 32 x 32 (128-d), random affine augmentation (rotation 10 deg, shear "
            "0.3, scale 0.8-1.2, translation 2 px), Adam with cosine decay; search trained on Balinese, "
            "Early_Aramaic, Greek, Latin (96 classes) and scored by Recall@1 on Korean (40 classes); finals "
            "trained on the 5 training alphabets (136 classes) and scored on Japanese_(katakana), Sanskrit, "
            "Tagalog (106 classes, 2,120 images) and on the 20 official 20-way one-shot runs")

    def splits(self, data_dir):
        from omniglot_recipe import VALIDATION_ALPHABETS, class_alphabets

        def arrays(split):
            pairs = datasets.load("omniglot", split, data_dir=data_dir, image_size=self.image_size)
            images, labels = zip(*pairs.as_numpy_iterator())
            return np.stack(images), np.array(labels)

        images, labels = arrays("train")
        held = np.isin(class_alphabets(data_dir)[labels], VALIDATION_ALPHABETS)
        return {"search": (images[~held], labels[~held]), "validation": (images[held], labels[held]),
                "train": (images, labels), "test": arrays("test")}

    def model(self, input_shape, loss):
        return build_embedding_model(input_shape, embedding_dim=self.embedding_dim, normalize=NORMALISED[loss])

    def batches(self, seed):
        return lambda batches: augment_batches(batches, random_affine, seed=seed)

    def learning_rate(self, value, steps):
        return keras.optimizers.schedules.CosineDecay(value, decay_steps=steps)

    def extras(self, model, data_dir):
        return {"one_shot": one_shot_accuracy(model, Path(data_dir) / "all_runs.zip")["accuracy"]}


PROTOCOLS = {protocol.name: protocol for protocol in (Cars196(), Omniglot())}


def train(protocol, data, loss, setting, steps, seed, batch_size=BATCH_SIZE):
    """A model of ``protocol`` trained on ``data = (x, labels)`` with one loss and setting; returns it."""
    params, learning_rate, samples_per_class = tuning.split_setting(setting)
    inputs, labels = data
    return fit(lambda: protocol.model(inputs.shape[1:], loss), losses.get(loss, **params), inputs, labels,
               learning_rate=protocol.learning_rate(learning_rate, steps), steps=steps,
               classes_per_batch=batch_size // samples_per_class, samples_per_class=samples_per_class, seed=seed,
               batches=protocol.batches(seed))


def score(model, data, clustering, seed):
    """evaluate() of the model's embeddings of ``data``, or None when they are not finite."""
    embeddings = model.predict(data[0], batch_size=512, verbose=0)
    if not np.all(np.isfinite(embeddings)):
        return None
    return evaluate(embeddings, data[1], clustering=clustering, seed=seed)


def tune(protocol, loss, search, validation, trials, steps, seed, batch_size=BATCH_SIZE):
    """``harness.tuning.tune`` of one loss: trained on ``search``, scored by Recall@1 on ``validation``."""
    def objective(setting):
        metrics = score(train(protocol, search, loss, setting, steps, seed, batch_size), validation, False, seed)
        return None if metrics is None else metrics["recall@1"]

    return tuning.tune(loss, objective, trials, seed, protocol.learning_rates)


def final_runs(protocol, data, loss, setting, steps, seeds, data_dir):
    """Test metrics (plus the protocol's extras) of the setting trained with every seed."""
    runs = []
    for seed in seeds:
        started = time.perf_counter()
        model = train(protocol, data["train"], loss, setting, steps, seed)
        metrics = score(model, data["test"], True, seed) or {c: float("nan") for c in COLUMNS}
        runs.append({"seed": seed, **metrics, **protocol.extras(model, data_dir),
                     "seconds": time.perf_counter() - started})
    return runs


def extend(protocol, data, loss, result, steps, seeds, data_dir):
    """Adds to ``result`` (one loss's, updated in place) the final runs of its best setting with the ``seeds`` its
    runs lack, in seed order, and summarises them all again; the search is not rerun."""
    missing = [seed for seed in seeds if seed not in {run.get("seed") for run in result["runs"]}]
    if not missing:
        return
    started = time.perf_counter()
    runs = final_runs(protocol, data, loss, result["best"], steps, missing, data_dir)
    result["runs"] = sorted(result["runs"] + runs, key=lambda run: run["seed"])
    result["summary"] = summarise(result["runs"])
    result["seconds"] += time.perf_counter() - started
    result["load"] = machine.load()
    print(loss, "seeds", missing, {c: round(v[0], 4) for c, v in result["summary"].items()}, flush=True)


def summarise(runs):
    """{metric: (mean, std)} over the runs, for COLUMNS and the extras they share."""
    names = [k for k in runs[0] if k not in ("seed", "seconds")]
    return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))) for k in names}


def ordered(results):
    return sorted(results, key=lambda name: -results[name]["summary"]["recall@1"][0])


def markdown(record):
    """The results page of one dataset: protocol, table, ordering and agreement with the papers."""
    settings, results = record["settings"], record["results"]
    protocol = PROTOCOLS[settings["dataset"]]
    shown = list(COLUMNS + protocol.extra_columns)
    minutes = sum(r["seconds"] for r in results.values()) / 60
    loads = [r["load"][0] for r in results.values()]
    lines = [f"# A fair comparison of the losses ({protocol.title})", "",
             f"Every loss: {settings['trials']} Optuna TPE trials (seed {settings['tune_seed']}"
             + ("; no more than TPE's 10 random start-up trials, so a seeded random search"
                if settings["trials"] <= TPE_STARTUP else "") + ") of "
             f"{settings['steps']} steps over its own parameters, the learning rate "
             f"({settings['learning_rates'][0]:g} to {settings['learning_rates'][1]:g}, log) and K "
             f"(P = {settings['batch_size']} / K); {protocol.text}. The best setting of each loss was trained "
             f"with seeds {', '.join(map(str, settings['seeds']))}{fewer_seeds(results, settings['seeds'])} "
             f"({settings['steps']} steps each); mean +- std "
             f"in %. Whole run {minutes:.0f} min on {record['machine']['cpus']} shared CPU cores "
             f"(1-min load {min(loads):.1f} to {max(loads):.1f} at the end of each loss).", "",
             "| loss | best setting | val R@1 | " + " | ".join(HEADERS[c] for c in shown)
             + " | tune s | final s |", "| --- " * (len(shown) + 5) + "|"]
    for name in ordered(results):
        r = results[name]
        setting = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["best"].items())
        cells = [f"{100 * r['summary'][c][0]:.1f} +- {100 * r['summary'][c][1]:.1f}" for c in shown]
        lines.append(f"| {name} | {setting} | {100 * r['validation_recall@1']:.1f} | {' | '.join(cells)} | "
                     f"{r['tune_seconds']:.0f} | {r['seconds'] - r['tune_seconds']:.0f} |")
    lines += ["", "Ordering by test R@1: " + " > ".join(
        f"{name} {100 * results[name]['summary']['recall@1'][0]:.1f}" for name in ordered(results)) + ".", ""]
    if len(results) > 2:
        lines += [validation_agreement(results), ""]
    lines += ["Agreement with the papers (their pairs better > worse; a tie: means closer than the sum of the two "
              "stds). Wang et al. 2017 and Sohn 2016 fine-tuned GoogLeNet, Wang et al. 2019 (Multi-Similarity) and "
              "Kim et al. 2020 (Proxy-Anchor) BN-Inception, on CUB-200, Cars196 and Online Products with their "
              "own settings; Deng et al. 2019 (ArcFace) compared the margin softmaxes on faces; here every loss "
              "had the same search. Khosla et al. 2020 (SupCon) measured classification, not retrieval: no pair.",
              ""]
    lines += agreement(results)
    return "\n".join(lines) + "\n"


# What the papers found, as pairs (better, worse) of the losses they compare. Wang et al. 2017 (Tables 1-3:
# CUB-200, Cars196, Online Products, fine-tuned GoogLeNet): angular beats N-pair and triplet, and N-pair +
# angular beats both alone. Sohn 2016 (Tables 1-3): N-pair beats the triplet and contrastive baselines.
# Wang et al. 2019 (Table 1 ablation and Tables 2-4): Multi-Similarity beats contrastive, triplet, N-pair, angular and
# Proxy-NCA. Kim et al. 2020 (Tables 1-2): Proxy-Anchor beats Multi-Similarity and Proxy-NCA. Deng et al. 2019
# (Tables 2 and 8, faces): ArcFace beats CosFace by a little.
PAPER_CLAIMS = {
    "Wang et al. 2017": (("npair_angular", "angular"), ("npair_angular", "npair"), ("npair_angular", "triplet_semihard"),
                         ("angular", "npair"), ("angular", "triplet_semihard"), ("npair", "triplet_semihard")),
    "Sohn 2016": (("npair", "triplet_semihard"), ("npair", "contrastive")),
    "Wang et al. 2019": (("multi_similarity", "contrastive"), ("multi_similarity", "triplet_semihard"),
                         ("multi_similarity", "npair"), ("multi_similarity", "angular"),
                         ("multi_similarity", "proxy_nca")),
    "Kim et al. 2020": (("proxy_anchor", "multi_similarity"), ("proxy_anchor", "proxy_nca")),
    "Deng et al. 2019": (("arcface", "cosface"),),
}
CLASSIC = ("contrastive", "triplet_semihard", "triplet_hard")  # the Reality Check's "old" baselines


def validation_agreement(results):
    """A sentence on how well the search's validation R@1 (one seed) foretells the losses' test order."""
    names = list(results)
    validation = [results[name]["validation_recall@1"] for name in names]
    test = [results[name]["summary"]["recall@1"][0] for name in names]
    ranks = [np.argsort(np.argsort(-np.asarray(values))) for values in (validation, test)]  # no ties in practice
    rho = float(np.corrcoef(*ranks)[0, 1])
    best = names[int(np.argmax(validation))]
    return (f"Validation foretells test: Spearman rank correlation {rho:.2f} between the validation R@1 of the "
            f"search (one seed) and the test R@1 (mean of the seeds) over the {len(names)} losses; the best on "
            f"validation, {best}, is number {1 + int(ranks[1][names.index(best)])} on test.")


def fewer_seeds(results, seeds):
    """The note for losses finished with other seeds than ``seeds`` (a budget cut), or ""."""
    def seeds_of(result):
        got = [run.get("seed") for run in result["runs"]]
        return list(seeds) if None in got and len(got) == len(seeds) else got  # runs from before runs named seeds

    other = {name: seeds_of(result) for name, result in results.items() if seeds_of(result) != list(seeds)}
    return "".join(f" ({name}: seeds {', '.join(map(str, got))})" for name, got in other.items())


def agreement(results):
    """Lines saying where the tuned ordering agrees with the papers' and the Reality Check's findings.

    A paper's pair (a, b) agrees when a's mean test Recall@1 is above b's, and is called a tie when the
    means are closer than the sum of their standard deviations over the seeds.
    """
    r1 = {name: results[name]["summary"]["recall@1"] for name in results}

    def tied(a, b):
        return abs(r1[a][0] - r1[b][0]) <= r1[a][1] + r1[b][1]

    lines = []
    for paper, claims in PAPER_CLAIMS.items():
        pairs = [(a, b) for a, b in claims if a in r1 and b in r1]
        if not pairs:
            continue
        kept = [(a, b) for a, b in pairs if r1[a][0] > r1[b][0]]
        broken = [f"{a} <= {b}" + (" (tie)" if tied(a, b) else "") for a, b in pairs if (a, b) not in kept]
        ties = sum(tied(a, b) for a, b in kept)
        lines.append(f"- {paper}: agrees on {len(kept)} of {len(pairs)} pairs"
                     + (f" ({ties} within one std sum)" if ties else "")
                     + (f"; disagrees on {', '.join(broken)}" if broken else "") + ".")
    if r1:
        means = sorted(v[0] for v in r1.values())
        top = max(r1, key=lambda name: r1[name][0])
        close = sorted(name for name in r1 if tied(top, name))
        line = (f"- Musgrave et al. 2020 (Reality Check: tuned, the losses end close together and the classic "
                f"ones keep up): test R@1 spans {100 * (means[-1] - means[0]):.1f} points; within one std sum of "
                f"the best ({top}): {', '.join(close)}")
        classic = [name for name in r1 if name in CLASSIC]
        newer = [name for name in r1 if name not in CLASSIC]
        if classic and newer:
            old, new = (max(names, key=lambda name: r1[name][0]) for names in (classic, newer))
            line += (f"; best classic {old} {100 * r1[old][0]:.1f} vs best newer {new} {100 * r1[new][0]:.1f} "
                     f"({100 * (r1[new][0] - r1[old][0]):+.1f} points"
                     + (", a tie" if tied(old, new) else "") + ")")
        lines.append(line + ".")
    return lines


def plot(record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, protocol = record["results"], PROTOCOLS[record["settings"]["dataset"]]
    names = ordered(results)
    shown = ("recall@1", "map@r", "nmi") + protocol.extra_columns
    width = 0.8 / len(shown)
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for i, column in enumerate(shown):
        means = [100 * results[n]["summary"][column][0] for n in names]
        stds = [100 * results[n]["summary"][column][1] for n in names]
        axis.bar(np.arange(len(names)) + (i - (len(shown) - 1) / 2) * width, means, width, yerr=stds,
                 label=column, capsize=2)
    axis.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    axis.set_ylabel("% on test classes (mean +- std)")
    axis.set_title(f"Tuned losses: {protocol.title}", fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def kept(previous, settings):
    """The results of ``previous`` (a record) that were run with ``settings``: the same settings but for the
    losses' normalisation, which must agree for each kept loss (a loss added later leaves the others' valid),
    and the seeds, which each result's runs name (the page says which losses had fewer)."""
    before = previous.get("settings", {})
    same = {k: v for k, v in before.items() if k not in ("normalised", "seeds")} == {
        k: v for k, v in settings.items() if k not in ("normalised", "seeds")}
    return {name: result for name, result in previous.get("results", {}).items()
            if same and before.get("normalised", {}).get(name) == settings["normalised"].get(name)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(PROTOCOLS), default="cars196")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--trials", type=int, help="trials per loss (default: the dataset's, 4 on cars196, 6 on "
                                                    "omniglot)")
    parser.add_argument("--steps", type=int, help="steps per run (default: 500 on cars196, 210 on omniglot)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--data-dir", help="default: ../shared/data/<dataset>")
    parser.add_argument("--out", help="results path without suffix (default: benchmarks/results/fair_comparison_"
                                      "<dataset>, or .bench/ with --quick)")
    parser.add_argument("--resume", action="store_true", help="skip losses already finished with these settings")
    parser.add_argument("--more-seeds", action="store_true",
                        help="keep the finished losses (as --resume) and train each one's best setting with the "
                             "--seeds its runs lack, without a new search")
    parser.add_argument("--quick", action="store_true", help="2 trials, 3 steps, 1 seed, into .bench/")
    parser.add_argument("--report", action="store_true", help="only rewrite the .md and .png from the .json")
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.dataset]
    data_dir = args.data_dir or str(SHARED_DATA / args.dataset)
    steps, args.trials = args.steps or protocol.steps, args.trials or protocol.trials
    if args.quick:
        args.trials, steps, args.seeds = 2, 3, [0]
    default_out = (HERE.parent / ".bench" if args.quick else HERE / "results") / f"fair_comparison_{args.dataset}"
    out = Path(args.out) if args.out else default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"dataset": args.dataset, "trials": args.trials, "steps": steps, "seeds": args.seeds,
                "tune_seed": args.tune_seed, "batch_size": BATCH_SIZE, "embedding_dim": protocol.embedding_dim,
                "learning_rates": list(protocol.learning_rates), "sampler": "optuna TPESampler",
                "normalised": NORMALISED}
    if args.report:
        record = results_file.read(out)
        results_file.write(out, record, markdown(record))
        plot(record, out.with_suffix(".png"))
        return 0
    if not Path(data_dir).is_dir():
        print(f"{args.dataset} data absent ({data_dir}): fair comparison skipped")
        return 0
    results = kept(results_file.read(out, {}), settings) if args.resume or args.more_seeds else {}
    record = {"settings": settings, "machine": machine.describe(), "results": results}
    data = protocol.splits(data_dir)
    for loss in args.losses:
        if loss in results:
            if args.more_seeds:
                extend(protocol, data, loss, results[loss], steps, args.seeds, data_dir)
                results_file.write(out, record, markdown(record))
            continue
        started = time.perf_counter()
        best, best_value, history = tune(protocol, loss, data["search"], data["validation"], args.trials, steps,
                                         args.tune_seed)
        tune_seconds = time.perf_counter() - started
        runs = final_runs(protocol, data, loss, best, steps, args.seeds, data_dir)
        results[loss] = {"best": best, "validation_recall@1": best_value, "trials": history, "runs": runs,
                         "summary": summarise(runs), "tune_seconds": tune_seconds,
                         "seconds": time.perf_counter() - started, "load": machine.load()}
        results_file.write(out, record, markdown(record))
        print(loss, best, round(best_value, 4), {c: round(v[0], 4) for c, v in results[loss]["summary"].items()},
              f"{results[loss]['seconds']:.0f} s", flush=True)
    plot(record, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
