"""Cars196 (cropped), frozen ImageNet EfficientNet-Lite0: which head, views and settings pay.

Every change to the frozen-feature protocol of benchmarks/cars196.py is
measured here, chosen on validation classes and only then run on the test
classes:

- views: the 224 x 224 crop as stored ("plain"), mirrored left-right
  ("flip"), or resized to 288 pixels ("plain288", "flip288"); a view's
  features are extracted once and cached by the protocol ``rankloss-tf
  train`` runs (``harness.training.frozen_features``: one cache for both).
  Training may use several views of an image as separate samples of its
  class (feature-level augmentation); queries average the features of the
  test views before the head.
- pooling: the backbone's last feature map pooled by average ("avg", as
  every row before GeM) or generalised mean ("gem", p = ``gem_power``;
  ``rankloss_tf.backbones.pooling``), each cached under its own key.
- head: ``linear`` (dense 1280 -> 512, the library's ``projection_head``),
  ``bn_linear`` / ``ln_linear`` (batch / layer normalisation of the features,
  then the dense layer) or ``mlp`` (dense 1280 -> hidden, ReLU, dropout, dense -> 512).
- loss and optimisation: N-pair mc (Sohn 2016) by default, or one of today's
  losses (a class head trains the proxies / class vectors, ``harness.training.fit``);
  learning rate and steps.
- ensembles (``members``): independent heads (each its own variant and seed)
  on the same features; each head's output L2-normalised, concatenated and
  normalised again. A member's embeddings are cached per stage, name and
  seed (~/.cache/rankloss_tf/cars196_recipe_embeddings), so ensembles that
  share heads train each once; the row's "head s" counts the heads trained
  in that run only.

Selection: train on classes 1-73, score Recall@1 on classes 74-98 (2,000 or
so images, never the test classes). Final: train on 1-98, test on 99-196
(8,131 images), Recall@1/2/4/8, MAP@R, NMI, F1.

Writes benchmarks/results/cars196_recipe.json / .md (one line per run, with
settings, seed, wall time and the load).

Usage::

    python benchmarks/cars196_recipe.py --extract
    python benchmarks/cars196_recipe.py --variants linear mlp mlp_flip --stage validation
    python benchmarks/cars196_recipe.py --variants mlp_flip --stage test --seeds 0 1 2
    python benchmarks/cars196_recipe.py --variants ens_np_ln ens_np2_ln2 --stage test --seeds 0 1
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import keras
import numpy as np

from rankloss_tf import losses
from rankloss_tf.evaluation import evaluate
from rankloss_tf.models import projection_head

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import machine, results as results_file  # noqa: E402
from harness.training import fit, frozen_features  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "cars196"
RESULTS = HERE / "results" / "cars196_recipe"
TRAIN_CLASSES = 98  # labels 0..97 are classes 1-98
VALIDATION_FROM = 73  # labels 73..97 (classes 74-98) validate the choices


def view_features(data_dir, split, views=("plain", "flip", "plain288", "flip288"), pooling="avg", gem_power=None):
    """``{view: (features, labels)}`` of one split, at least for ``views`` (of "plain", "flip", "plain288",
    "flip288"; only the sizes and mirrors they need are extracted), pooled by ``pooling``."""
    sizes = tuple(sorted({288 if view.endswith("288") else 224 for view in views}))
    mirror = any(view.startswith("flip") for view in views)
    return frozen_features("cars196", data_dir, split, view_sizes=sizes, mirror_views=mirror, pooling=pooling,
                           gem_power=gem_power if pooling == "gem" else None)


def feature_needs(variant):
    """``(views, pooling, gem_power)`` the variant (every member of an ensemble) trains and embeds from."""
    parts = [VARIANTS[name] for name in variant.members] or [variant]
    poolings = {(part.pooling, part.gem_power) for part in parts}
    if len(poolings) > 1:
        raise ValueError(f"An ensemble's members must share their pooling. Received: {sorted(poolings)}")
    views = sorted({view for part in parts for view in part.train_views + part.test_views})
    return (tuple(views), *poolings.pop())


@dataclasses.dataclass(frozen=True)
class Variant:
    head: str = "linear"
    hidden: int = 1024
    dropout: float = 0.0
    train_views: tuple = ("plain",)
    test_views: tuple = ("plain",)
    loss: str = "npair"
    loss_options: tuple = (("variant", "mc"), ("l2_reg", 0.002))
    classes_per_batch: int = 64
    samples_per_class: int = 2
    embedding_dim: int = 512
    learning_rate: float = 1e-4
    steps: int = 2000
    cosine: bool = False  # cosine-decay the learning rate to 0 over the steps (as ``rankloss-tf train`` does)
    normalize: bool = False  # L2-normalise the head's output (the pair losses on cosines)
    pooling: str = "avg"  # the backbone's last feature map: "avg" or "gem" (generalised mean)
    gem_power: float = 3.0  # the exponent of "gem"
    members: tuple = ()  # an ensemble: names of variants whose heads train apart; embeddings concatenated


VIEWS4 = ("plain", "flip", "plain288", "flip288")
FLIP = dict(train_views=("plain", "flip"), test_views=("plain", "flip"))
VIEWS4_COSINE = dict(train_views=VIEWS4, test_views=VIEWS4, cosine=True)
PA = dict(VIEWS4_COSINE, loss="proxy_anchor", loss_options=(("margin", 0.1), ("alpha", 32.0)), steps=2000)
MS = dict(VIEWS4_COSINE, loss="multi_similarity", loss_options=(), normalize=True, classes_per_batch=32,
          samples_per_class=4, learning_rate=3e-4, steps=2000)
RECIPE = dict(VIEWS4_COSINE, learning_rate=2e-4, embedding_dim=1280, steps=3968)
PA_FAST = dict(RECIPE, loss="proxy_anchor", learning_rate=1e-4,
               loss_options=(("margin", 0.1), ("alpha", 32.0), ("class_lr_multiplier", 100.0)))
VARIANTS = {
    "linear": Variant(),
    "linear_lr3e-4": Variant(learning_rate=3e-4),
    "linear_flip": Variant(**FLIP),
    "linear_testflip": Variant(test_views=("plain", "flip")),
    "mlp": Variant(head="mlp"),
    "mlp_lr3e-4": Variant(head="mlp", learning_rate=3e-4),
    "mlp_flip": Variant(head="mlp", **FLIP),
    "mlp_flip_lr3e-4": Variant(head="mlp", learning_rate=3e-4, **FLIP),
    "mlp_flip_drop": Variant(head="mlp", dropout=0.3, learning_rate=3e-4, **FLIP),
    "mlp_flip_4k": Variant(head="mlp", learning_rate=3e-4, steps=4000, **FLIP),
    "linear_288": Variant(train_views=("plain288",), test_views=("plain288",)),
    "linear_flip_288": Variant(train_views=("plain", "flip", "plain288"), test_views=("plain", "flip", "plain288")),
    "linear_flip_4k": Variant(steps=4000, **FLIP),
    "linear_views4": Variant(train_views=("plain", "flip", "plain288", "flip288"),
                             test_views=("plain", "flip", "plain288", "flip288")),
    "linear_flip_lr3e-4": Variant(learning_rate=3e-4, **FLIP),
    "linear_views4_cosine": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True),
    "linear_views4_cosine_lr2e-4": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True, learning_rate=2e-4),
    "linear_views4_cosine_4k": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True, steps=4000),
    "linear_views4_cosine_lr2e-4_4k": Variant(train_views=VIEWS4, test_views=VIEWS4, cosine=True,
                                              learning_rate=2e-4, steps=4000),
    # Today's losses (issue 31) on the four views, learning rate cosine-decayed.
    "pa_views4": Variant(**PA, learning_rate=1e-3),
    "pa_views4_lr3e-3": Variant(**PA, learning_rate=3e-3),
    "pa_views4_lr3e-4": Variant(**PA, learning_rate=3e-4),
    "pa_views4_lr1e-4": Variant(**PA, learning_rate=1e-4),
    "cosface_views4": Variant(**VIEWS4_COSINE, loss="cosface", loss_options=(("margin", 0.35), ("scale", 32.0)),
                              learning_rate=1e-3, steps=2000),
    "ms_views4": Variant(**MS),
    "ms_views4_lr1e-3": Variant(**{**MS, "learning_rate": 1e-3}),
    "ms_views4_4k": Variant(**{**MS, "steps": 4000}),
    "ms_views4_d1024": Variant(**MS, embedding_dim=1024),
    "linear_views4_cosine_lr2e-4_d1024": Variant(**VIEWS4_COSINE, learning_rate=2e-4, embedding_dim=1024),
    "linear_views4_cosine_lr2e-4_d1280": Variant(**VIEWS4_COSINE, learning_rate=2e-4, embedding_dim=1280),
    "linear_views4_cosine_lr2e-4_d2048": Variant(**VIEWS4_COSINE, learning_rate=2e-4, embedding_dim=2048),
    # Issue 31 part 3: the recipe as ``rankloss-tf train`` runs it (64 epochs of 62 batches = 3,968 steps), and
    # what might beat it: a normalisation of the features before the dense layer, larger batches, today's losses.
    "recipe": Variant(**RECIPE),
    "recipe_2k": Variant(**{**RECIPE, "steps": 2000}),
    "recipe_bn": Variant(**{**RECIPE, "head": "bn_linear"}),
    "recipe_ln": Variant(**{**RECIPE, "head": "ln_linear"}),
    "recipe_p72": Variant(**{**RECIPE, "classes_per_batch": 72}),
    "recipe_lr4e-4": Variant(**{**RECIPE, "learning_rate": 4e-4}),
    "ms_d1280": Variant(**{**MS, "embedding_dim": 1280, "steps": RECIPE["steps"]}),
    "ms_d1280_lr1e-4": Variant(**{**MS, "embedding_dim": 1280, "steps": RECIPE["steps"], "learning_rate": 1e-4}),
    "supcon_d1280": Variant(**{**MS, "loss": "supcon", "embedding_dim": 1280, "steps": RECIPE["steps"]}),
    "supcon_d1280_lr1e-4": Variant(**{**MS, "loss": "supcon", "embedding_dim": 1280, "steps": RECIPE["steps"],
                                      "learning_rate": 1e-4}),
    # Proxy-Anchor with its proxies at 100 times the head's learning rate, as Kim et al. 2020 train them
    # (``class_lr_multiplier``); ArcFace / CosFace likewise.
    "pa_m100_lr1e-4": Variant(**PA_FAST),
    "pa_m100_lr3e-4": Variant(**{**PA_FAST, "learning_rate": 3e-4}),
    "pa_m100_lr3e-5": Variant(**{**PA_FAST, "learning_rate": 3e-5}),
    "pa_m10_lr3e-4": Variant(**{**PA_FAST, "learning_rate": 3e-4, "loss_options": PA_FAST["loss_options"][:2] + (
        ("class_lr_multiplier", 10.0),)}),
    "cosface_m100_lr1e-4": Variant(**{**PA_FAST, "loss": "cosface", "loss_options": (
        ("margin", 0.35), ("scale", 32.0), ("class_lr_multiplier", 100.0))}),
    "arcface_m100_lr1e-4": Variant(**{**PA_FAST, "loss": "arcface", "loss_options": (
        ("margin", 28.6), ("scale", 32.0), ("class_lr_multiplier", 100.0))}),
    # Lead 2: LayerNorm with a higher learning rate, LayerNorm under Proxy-Anchor (proxies at 100x).
    "recipe_ln_lr4e-4": Variant(**{**RECIPE, "head": "ln_linear", "learning_rate": 4e-4}),
    "pa_m100_ln": Variant(**{**PA_FAST, "head": "ln_linear"}),
    # Lead 1: ensembles of independent heads on the same frozen features, each head's output L2-normalised,
    # concatenated and normalised again (a repeated name trains again with another seed).
    "ens_np": Variant(members=("recipe",)),  # one head: the baseline on the cached embeddings the ensembles share
    "ens_np_ln": Variant(members=("recipe", "recipe_ln")),
    "ens_np_ln_pa": Variant(members=("recipe", "recipe_ln", "pa_m100_lr1e-4")),
    "ens_ln_ln": Variant(members=("recipe_ln", "recipe_ln")),
    "ens_ln_pa": Variant(members=("recipe_ln", "pa_m100_lr1e-4")),
    "ens_np_np": Variant(members=("recipe", "recipe")),
    "ens_np_ln_ln_pa": Variant(members=("recipe", "recipe_ln", "recipe_ln", "pa_m100_lr1e-4")),
    "ens_np2_ln2": Variant(members=("recipe", "recipe", "recipe_ln", "recipe_ln")),
    # GeM pooling (Radenovic et al. 2018, p = 3) of the backbone's last map instead of its average: the plain view
    # first (against "linear"), then the recipe on GeM features of the four views.
    "linear_gem3": Variant(pooling="gem"),
    "recipe_gem3": Variant(**RECIPE, pooling="gem"),
    "mlp_flip_288": Variant(head="mlp", learning_rate=3e-4, train_views=("plain288", "flip288"),
                            test_views=("plain288", "flip288")),
}


FEATURE_NORMS = {"bn_linear": keras.layers.BatchNormalization, "ln_linear": keras.layers.LayerNormalization}


def build_head(variant, feature_dim):
    if variant.head == "linear":
        return projection_head(feature_dim, variant.embedding_dim, normalize=variant.normalize, name="linear_head")
    inputs = keras.Input((feature_dim,), name="features")
    if variant.head in FEATURE_NORMS:  # the features normalised (batch / layer), then the dense projection
        x = keras.layers.Dense(variant.embedding_dim, name="projection")(FEATURE_NORMS[variant.head]()(inputs))
        outputs = keras.layers.UnitNormalization()(x) if variant.normalize else x
        return keras.Model(inputs, outputs, name=variant.head)
    if variant.head != "mlp":
        raise ValueError(f"`head` must be 'linear', 'mlp' or one of {sorted(FEATURE_NORMS)}. "
                         f"Received: head={variant.head!r}")
    x = keras.layers.Dense(variant.hidden, activation="relu", name="hidden")(inputs)
    if variant.dropout:
        x = keras.layers.Dropout(variant.dropout)(x)
    outputs = keras.layers.Dense(variant.embedding_dim, name="projection")(x)
    if variant.normalize:
        outputs = keras.layers.UnitNormalization()(outputs)
    return keras.Model(inputs, outputs, name="mlp_head")


def train_and_embed(variant, train, test, seed):
    """Trains a head on the train views' features; returns the embeddings of the averaged test views."""
    features = np.concatenate([train[view][0] for view in variant.train_views])
    labels = np.concatenate([train[view][1] for view in variant.train_views])
    learning_rate = variant.learning_rate
    if variant.cosine:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=variant.steps)
    head = fit(lambda: build_head(variant, features.shape[1]),
               losses.get(variant.loss, **dict(variant.loss_options)), features, labels,
               learning_rate=learning_rate, steps=variant.steps, classes_per_batch=variant.classes_per_batch,
               samples_per_class=variant.samples_per_class, seed=seed)
    queries = np.mean([test[view][0] for view in variant.test_views], axis=0)
    return head.predict(queries, batch_size=1024, verbose=0)


EMBEDDINGS = Path.home() / ".cache" / "rankloss_tf" / "cars196_recipe_embeddings"


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ensemble_embed(variant, train, test, seed, stage):
    """The members' L2-normalised embeddings concatenated and normalised again; returns (embeddings, fresh s).

    A member's embeddings are cached per (stage, name, seed), so ensembles that share heads train them once;
    the n-th repeat of a name trains with ``seed + 1000 * n``.
    """
    parts, seconds = [], 0.0
    for i, name in enumerate(variant.members):
        member_seed = seed + 1000 * variant.members[:i].count(name)
        path = EMBEDDINGS / f"{stage}_{name}_{member_seed}.npy"
        if not path.exists():
            watch = machine.Stopwatch()
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, train_and_embed(VARIANTS[name], train, test, member_seed))
            seconds += watch.seconds
        parts.append(_unit(np.load(path)))
    return _unit(np.concatenate(parts, axis=1)), seconds


def _select(features_by_view, keep):
    return {view: (f[keep(l)], l[keep(l)]) for view, (f, l) in features_by_view.items()}


def run(variant, stage, seed, data_dir):
    needs = feature_needs(variant)
    train_split = view_features(data_dir, "train", *needs)
    if stage == "validation":
        train = _select(train_split, lambda labels: labels < VALIDATION_FROM)
        test = _select(train_split, lambda labels: labels >= VALIDATION_FROM)
    else:
        train, test = train_split, view_features(data_dir, "test", *needs)
    watch = machine.Stopwatch()
    if variant.members:
        embeddings, fresh = ensemble_embed(variant, train, test, seed, stage)
    else:
        embeddings = train_and_embed(variant, train, test, seed)
    timing = watch.record()
    if variant.members:
        timing["seconds"] = fresh  # the heads trained now; cached members count 0
    labels = test[variant.test_views[0]][1]
    metrics = evaluate(embeddings, labels, clustering=stage == "test", seed=seed)
    return {"stage": stage, "variant": dataclasses.asdict(variant), "seed": seed, "metrics": metrics,
            "train_seconds": timing["seconds"], "load_before": timing["load_before"],
            "load_after": timing["load_after"]}


def markdown(records):
    default = dataclasses.asdict(Variant())
    lines = ["# Cars196 (cropped), frozen EfficientNet-Lite0: head, views and settings", "",
             "Validation: head trained on classes 1-73, Recall@1 on classes 74-98. Test: trained on 1-98, "
             "scored on 99-196. Views: plain = the stored 224 crop, flip = mirrored, 288 = upsampled to 288; "
             "test features are the mean over the test views. 2 shared CPU cores; load = 1-min average "
             "before / after.", "",
             "| stage | name | seed | R@1 | R@2 | R@4 | R@8 | MAP@R | NMI | F1 | head s | load | changes from linear |",
             "| --- " * 13 + "|"]
    for r in records:
        m = r["metrics"]
        changes = {k: v for k, v in r["variant"].items() if json.dumps(v) != json.dumps(default[k])}
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in
                 ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "nmi", "f1")]
        lines.append(f"| {r['stage']} | {r['name']} | {r['seed']} | {' | '.join(cells)} | {r['train_seconds']:.0f} | "
                     f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f} | {changes or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extract", action="store_true", help="extract and cache the four views' features")
    parser.add_argument("--pooling", choices=("avg", "gem"), default="avg", help="the pooling --extract extracts "
                                                                                 "(gem: p = 3)")
    parser.add_argument("--splits", nargs="+", choices=("train", "test"), default=["train", "test"],
                        help="the splits --extract extracts")
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--stage", choices=("validation", "test"), default="validation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.extract:
        for split in args.splits:
            watch = machine.Stopwatch()
            extracted = view_features(args.data_dir, split, pooling=args.pooling, gem_power=Variant.gem_power)
            shapes = {view: features.shape for view, (features, _) in extracted.items()}
            print(f"{split}: {shapes} in {watch.seconds:.0f} s, load {machine.load()[0]:.1f}", flush=True)
    records = results_file.read(args.results, [])
    for name in args.variants:
        for seed in args.seeds:
            record = run(VARIANTS[name], args.stage, seed, args.data_dir)
            record["name"] = name
            records.append(record)
            results_file.write(args.results, records, markdown(records))
            print(name, seed, {k: round(v, 4) for k, v in record["metrics"].items()}, flush=True)


if __name__ == "__main__":
    main()
