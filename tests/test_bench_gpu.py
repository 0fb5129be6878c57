"""The one-GPU benchmark at tiny sizes, on whatever device the suite has."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_gpu  # noqa: E402


@pytest.mark.slow
def test_tiny_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu"
    assert bench_gpu.main(["--tiny", "--budget-s", "600", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert {(r["loss"], r["xla"], r["policy"]) for r in report["losses"]} == {
        (loss, xla, policy) for loss in bench_gpu.LOSSES for xla in (False, True) for policy in bench_gpu.POLICIES
    }
    assert all(r["status"] == "ok" and r["time_s"] > 0 for r in report["losses"])
    assert report["evaluation"]["time_s"] > 0 and report["fit"]["step_s"] > 0
    table = out.with_suffix(".md").read_text()
    assert "Device:" in table and "| npair_angular | yes | mixed_bfloat16 | 32 |" in table
