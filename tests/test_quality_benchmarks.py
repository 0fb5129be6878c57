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
from harness import tuning  # noqa: E402
import finetune_gpu  # noqa: E402
import omniglot_recipe  # noqa: E402

OMNIGLOT = SHARED_DATA / "omniglot"
CARS196 = SHARED_DATA / "cars196"


def _clusters(classes, per_class, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + 0.5 * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


@pytest.mark.parametrize("loss", fair_comparison.LOSSES)
def test_every_loss_is_tuned_within_its_budget(loss):
    pytest.importorskip("optuna")
    protocol = fair_comparison.PROTOCOLS["cars196"]
    train, validation = _clusters(8, 8), _clusters(6, 8, seed=1)
    best, value, history = fair_comparison.tune(protocol, loss, train, validation, trials=2, steps=3, seed=0,
                                                batch_size=16)
    assert len(history) == 2 and 0.0 <= value <= 1.0 and all(t["seconds"] > 0 for t in history)
    params, learning_rate, k = tuning.split_setting(best)
    assert k in (2, 4, 8) and 1e-5 <= learning_rate <= 3e-3
    assert set(params) == set(tuning.SPACES[loss])
    for name, value in params.items():
        low, high, _ = tuning.SPACES[loss][name]
        assert low <= value <= high, (name, value)
    head = fair_comparison.train(protocol, train, loss, best, steps=2, seed=0, batch_size=16)
    assert head.output_shape == (None, protocol.embedding_dim)  # the embedding model, not a class head


def test_the_search_spaces_are_the_old_ones_for_the_seed_losses():
    # The committed fair_comparison pages were searched with these ranges (drawn in this order).
    assert {loss: tuning.SPACES[loss] for loss in fair_comparison.LOSSES[:6]} == {
        "contrastive": {"margin": (0.1, 1.5, False)}, "triplet_semihard": {"margin": (0.01, 1.0, False)},
        "triplet_hard": {"margin": (0.01, 1.0, False)}, "npair": {"l2_reg": (1e-4, 1e-1, True)},
        "angular": {"alpha": (25.0, 55.0, False)},
        "npair_angular": {"alpha": (25.0, 55.0, False), "lam": (0.25, 4.0, True)}}
    assert set(tuning.SPACES) == set(fair_comparison.LOSSES)


def test_a_resumed_comparison_keeps_the_losses_run_with_the_same_settings():
    settings = {"trials": 4, "normalised": {"npair": False, "supcon": True}}
    previous = {"settings": {"trials": 4, "normalised": {"npair": False}}, "results": {"npair": {"x": 1}}}
    assert fair_comparison.kept(previous, settings) == {"npair": {"x": 1}}
    assert fair_comparison.kept(previous, {**settings, "trials": 6}) == {}
    assert fair_comparison.kept(previous, {**settings, "normalised": {"npair": True}}) == {}
    # Seeds are the results' own: a loss added with fewer seeds keeps the others, and the page says so.
    assert fair_comparison.kept({**previous, "settings": {**previous["settings"], "seeds": [0, 1, 2]}},
                                {**settings, "seeds": [0, 1]}) == {"npair": {"x": 1}}
    results = {"npair": {"runs": [{"seed": 0}, {"seed": 1}, {"seed": 2}]}, "supcon": {"runs": [{"seed": 0}]}}
    assert fair_comparison.fewer_seeds(results, [0, 1, 2]) == " (supcon: seeds 0)"
    assert fair_comparison.fewer_seeds({"npair": {"runs": [{}, {}, {}]}}, [0, 1, 2]) == ""  # runs without seeds


def test_more_seeds_trains_only_the_missing_seeds_of_the_kept_setting(monkeypatch):
    calls = []

    def final_runs(protocol, data, loss, setting, steps, seeds, data_dir):
        calls.append((loss, setting, steps, list(seeds)))
        return [{"seed": seed, "recall@1": 0.1 * seed, "seconds": 1.0} for seed in seeds]

    monkeypatch.setattr(fair_comparison, "final_runs", final_runs)
    result = {"best": {"temperature": 0.1}, "runs": [{"seed": 3, "recall@1": 0.3, "seconds": 1.0},
                                                      {"seed": 0, "recall@1": 0.0, "seconds": 1.0}],
              "summary": {}, "seconds": 10.0, "tune_seconds": 8.0, "load": (0, 0, 0)}
    fair_comparison.extend(None, None, "supcon", result, 7, [0, 1, 2, 3, 4], "data")
    assert calls == [("supcon", {"temperature": 0.1}, 7, [1, 2, 4])]  # no new search, the kept setting
    assert [run["seed"] for run in result["runs"]] == [0, 1, 2, 3, 4]
    assert result["summary"]["recall@1"][0] == pytest.approx(0.2)
    assert result["seconds"] > 10.0 and result["tune_seconds"] == 8.0
    fair_comparison.extend(None, None, "supcon", result, 7, [0, 1, 2, 3, 4], "data")
    assert len(calls) == 1  # nothing missing: nothing trained


def test_the_page_says_how_well_validation_foretold_the_test_order():
    def result(validation, test):
        return {"validation_recall@1": validation, "summary": {"recall@1": (test, 0.0)}}

    same = {"a": result(0.9, 0.5), "b": result(0.8, 0.4), "c": result(0.7, 0.3)}
    assert "correlation 1.00" in fair_comparison.validation_agreement(same)
    reversed_ = {"a": result(0.9, 0.3), "b": result(0.8, 0.4), "c": result(0.7, 0.5)}
    text = fair_comparison.validation_agreement(reversed_)
    assert "correlation -1.00" in text and "the best on validation, a, is number 3 on test" in text


def _quick_run(tmp_path, dataset, loss):
    """The script's --quick path for one loss; returns (record, markdown)."""
    out = tmp_path / f"fair_{dataset}"
    assert fair_comparison.main(["--dataset", dataset, "--quick", "--losses", loss, "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["trials"] == 2 and record["settings"]["seeds"] == [0]
    result = record["results"][loss]
    assert len(result["trials"]) == 2 and [run["seed"] for run in result["runs"]] == [0]
    assert set(fair_comparison.COLUMNS) <= set(result["summary"]) and result["summary"]["recall@1"][1] == 0.0
    assert out.with_suffix(".png").stat().st_size > 0
    out.with_suffix(".md").unlink()  # --report rebuilds the page from the JSON alone
    assert fair_comparison.main(["--dataset", dataset, "--out", str(out), "--report"]) == 0
    return record, out.with_suffix(".md").read_text()


def _disjoint(splits):
    search, validation, train, test = (set(splits[k][1].tolist()) for k in ("search", "validation", "train", "test"))
    assert search and validation and not search & validation and search | validation == train
    assert not train & test


@pytest.mark.skipif(not omniglot.is_local_dir(OMNIGLOT), reason="Omniglot zips absent")
def test_quick_omniglot_comparison_and_its_splits(tmp_path):
    pytest.importorskip("optuna")
    splits = fair_comparison.PROTOCOLS["omniglot"].splits(str(OMNIGLOT))
    _disjoint(splits)
    assert len(set(splits["validation"][1].tolist())) == 40 and splits["test"][0].shape[1:] == (32, 32, 1)
    record, page = _quick_run(tmp_path, "omniglot", "npair_angular")
    assert 0.0 <= record["results"]["npair_angular"]["runs"][0]["one_shot"] <= 1.0
    assert "| npair_angular | alpha " in page and "one-shot (20 runs)" in page and "- Sohn 2016" in page


@pytest.mark.skipif(not CARS196.is_dir(), reason="Cars196 data absent")
def test_quick_cars196_comparison_and_its_splits(tmp_path):
    pytest.importorskip("optuna")
    from rankloss_tf.cache import default_cache_dir

    cached = [sorted(default_cache_dir("features").glob(f"cars196_*_{split}_plain-efficientnet_lite0-224-*.npz"))
              for split in ("train", "test")]
    if not all(cached):
        pytest.skip("Cars196 Lite0 features not cached (extracting them takes many minutes)")
    splits = fair_comparison.PROTOCOLS["cars196"].splits(str(CARS196))
    _disjoint(splits)
    assert len(set(splits["validation"][1].tolist())) == 25
    record, page = _quick_run(tmp_path, "cars196", "contrastive")
    assert "one_shot" not in record["results"]["contrastive"]["runs"][0]
    assert "| contrastive | margin " in page and "Cars196" in page


def test_missing_data_skips_the_comparison(tmp_path, capsys):
    out = tmp_path / "fair"
    assert fair_comparison.main(["--dataset", "omniglot", "--data-dir", str(tmp_path / "absent"), "--quick",
                                 "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out and not out.with_suffix(".json").exists()


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
    assert 0.0 <= record["metrics"][omniglot_recipe.SHIFTED] <= 1.0  # at the recipe's test-time shift


@pytest.mark.slow
@pytest.mark.skipif(not omniglot.is_local_dir(OMNIGLOT), reason="Omniglot zips absent")
def test_recipe_shifts_smoke(tmp_path):
    omniglot_recipe.main(["--candidates", "baseline", "--steps", "2", "--results", str(tmp_path / "recipe"),
                          "--save-dir", str(tmp_path)])
    omniglot_recipe.main(["--shifts", str(tmp_path / "baseline_seed0.keras"), "--stage", "final",
                          "--results", str(tmp_path / "recipe")])
    record = json.loads((tmp_path / "recipe.json").read_text())[-1]
    assert record["stage"] == "final shifts" and set(record["one_shot_by_shift"]) == {
        str(s) for s in omniglot_recipe.SHIFTS}
    assert all(0.0 <= value <= 1.0 for value in record["one_shot_by_shift"].values())
    assert "| final shifts | baseline_seed0 | 0 |" in (tmp_path / "recipe.md").read_text()


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
    assert "agrees on 5 of 6 pairs (2 within one std sum); disagrees on angular <= npair (tie)." in wang
    assert "agrees on 2 of 2 pairs." in sohn
    assert "spans 5.0 points" in reality and "(npair_angular): npair, npair_angular" in reality
    assert "best classic triplet_semihard 68.0 vs best newer npair_angular 71.0 (+3.0 points)" in reality
    means["triplet_semihard"] = 0.705
    *_, reality = fair_comparison.agreement(
        {name: {"summary": {"recall@1": (value, 0.006)}} for name, value in means.items()})
    assert "(+0.5 points, a tie)" in reality
