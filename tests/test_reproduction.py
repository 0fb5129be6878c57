"""benchmarks/reproduction.py: one short real Omniglot run per batch shape, tables, resume."""

import json
import sys
from pathlib import Path

import pytest

from rankloss_tf import losses

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import reproduction  # noqa: E402


def test_loss_options_reach_the_loss():
    from rankloss_tf.app import TrainConfig

    method = reproduction.METHODS["npair_ovo"]
    loss = TrainConfig(loss=method.loss, loss_options=method.loss_options).build_loss()
    assert isinstance(loss, losses.NPairLoss) and loss.variant == "ovo"


def test_every_method_has_a_128_image_batch_and_a_known_loss():
    for method in reproduction.METHODS.values():
        assert reproduction.BATCH_SIZE % method.samples_per_class == 0
        assert method.loss in losses.LOSSES
    paper_keys = {key for _, order in reproduction.PAPER_ORDERINGS for key in order}
    assert paper_keys <= set(reproduction.METHODS)


def test_short_study_writes_json_markdown_plot_and_resumes(shared_data, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "repro"
    args = ["--data-dir", str(shared_data / "omniglot"), "--epochs", "1", "--seeds", "0",
            "--losses", "triplet_semihard", "npair_ovo", "--out", str(out)]
    reproduction.main(args)
    record = json.loads(out.with_suffix(".json").read_text())
    assert set(record["runs"]) == {"triplet_semihard", "npair_ovo"}
    for key in record["runs"]:
        row = record["runs"][key]["0"]
        assert row["steps"] == record["settings"]["steps_per_epoch"] == 21
        assert 1.0 < row["recall@1"] <= row["recall@2"] <= row["recall@4"] <= row["recall@8"] <= 100.0
        assert 0.0 < row["nmi"] < 100.0 and row["seconds"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| triplet semi-hard | 32 x 4 | 1 |" in table and "| N-pair ovo | 64 x 2 | 1 |" in table
    assert "Sohn 2016" in table and "pairwise orderings agree" in table
    assert (tmp_path / "repro_recall1.png").stat().st_size > 1000

    # Resuming with the runs done trains nothing and keeps the figures.
    reproduction.main([*args, "--resume"])
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == record["runs"]
