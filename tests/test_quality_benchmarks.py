"""The retrieval-quality benchmark scripts on tiny inputs: the tuner, the recipe search, the fine-tune smoke run."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rankloss_tf.datasets import omniglot
from tests.conftest import SHARED_DATA

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import fair_comparison  # noqa: E402
import finetune_gpu  # noqa: E402
import omniglot_recipe  # noqa: E402

OMNIGLOT = SHARED_DATA / "omniglot"


def _clusters(classes, per_class, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + 0.5 * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


@pytest.mark.parametrize("loss", fair_comparison.LOSSES)
def test_every_loss_is_tuned_within_its_budget(loss):
    pytest.importorskip("optuna")
    train, validation = _clusters(8, 8), _clusters(6, 8, seed=1)
    best, value, history = fair_comparison.tune(loss, train, validation, trials=2, steps=3, seed=0, batch_size=16)
    assert len(history) == 2 and 0.0 <= value <= 1.0
    params, learning_rate, k = fair_comparison.split_setting(loss, best)
    assert k in (2, 4, 8) and 1e-5 <= learning_rate <= 3e-3
    head = fair_comparison.train_head(*train, loss, params, learning_rate, k, steps=2, seed=0, batch_size=16)
    assert head.output_shape == (None, fair_comparison.EMBEDDING_DIM)


def test_episodes_are_one_shot_runs():
    images = np.arange(30, dtype=np.uint8).reshape(30, 1, 1, 1)
    labels = np.repeat(np.arange(6), 5)
    runs = omniglot_recipe.episodes(images, labels, count=3, ways=4, seed=0)
    for run in runs:
        support_classes = labels[run.support[:, 0, 0, 0]]
        query_classes = labels[run.queries[:, 0, 0, 0]]
        assert len(set(support_classes)) == 4
        np.testing.assert_array_equal(support_classes[run.targets], query_classes)
        assert not np.intersect1d(run.support.ravel(), run.queries.ravel()).size  # other drawers


@pytest.mark.slow
@pytest.mark.skipif(not omniglot.is_local_dir(OMNIGLOT), reason="Omniglot zips absent")
def test_recipe_validation_smoke(tmp_path):
    omniglot_recipe.main(["--candidates", "affine", "--steps", "2", "--results", str(tmp_path / "recipe")])
    record = json.loads((tmp_path / "recipe.json").read_text())[0]
    assert record["stage"] == "validation" and record["recipe"]["rotation"] == 10.0
    assert 0.0 <= record["metrics"]["one_shot"] <= 1.0 and "recall@1" in record["metrics"]
    assert "| validation | affine |" in (tmp_path / "recipe.md").read_text()


@pytest.mark.slow
def test_finetune_smoke_on_cpu(tmp_path):
    finetune_gpu.main(["--smoke", "--out", str(tmp_path / "finetune")])
    record = json.loads((tmp_path / "finetune.json").read_text())
    assert record["frozen_batch_norm_layers"] > 0
    assert 0.0 <= record["metrics"]["recall@1"] <= 1.0
    assert record["settings"]["steps"] == 3


def test_agreement_with_the_papers_counts_pairs():
    means = dict(npair=0.70, angular=0.69, npair_angular=0.71, triplet_semihard=0.68, contrastive=0.66)
    results = {name: {"summary": {"recall@1": (value, 0.006)}} for name, value in means.items()}
    wang, sohn, reality = fair_comparison.agreement(results)
    assert "agrees on 5 of 6 pairs; disagrees on angular <= npair" in wang
    assert "agrees on 3 of 3 pairs." in sohn
    assert "spans 5.0 points" in reality and "(npair_angular): npair, npair_angular" in reality
