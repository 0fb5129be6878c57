"""benchmarks/bench_ivf.py: its section of benchmarks/results/index.md, written in place, kept by bench_index.py."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_index  # noqa: E402
import bench_ivf  # noqa: E402


def fake_result(qps):
    point = {"recall_at_10": 0.97, "qps_batch1": qps, "qps_batch256": 10 * qps}
    curve = [{"probes": p, **point} for p in (1, 2)]
    return {"n": 1000, "machine": {"cpu": "x", "cores": 2, "load_before": [1, 1, 1], "load_after": [2, 2, 2]},
            "exact": {"build_s": 1.0, "peak_rss_gb": 0.1, "qps_batch1": 10.0, "qps_batch256": 100.0,
                      "recall_at_10": 1.0, "cross_class": 0.9, "status": "ok"},
            "ivf": {**point, "build_s": 2.0, "peak_rss_gb": 0.2, "lists": 30, "probes": 2, "curve": curve,
                    "status": "ok"},
            "faiss": {"build_s": 1.5, "peak_rss_gb": 0.1, "curve": curve, "status": "ok"}}


def test_the_ivf_section_is_replaced_in_place_and_kept_by_bench_index(tmp_path):
    (tmp_path / "index.md").write_text("# Exact rows\n\nkept\n")
    bench_ivf.write(fake_result(111.0), tmp_path)
    bench_ivf.write(fake_result(222.0), tmp_path)
    text = (tmp_path / "index.md").read_text()
    assert text.startswith("# Exact rows\n\nkept\n") and text.count(bench_ivf.BEGIN) == 1
    assert "| IVF SavedModel (defaults) | 30 | 2 | 2.0 | 0.20 | 222 | 2,220 | 0.970 |" in text and "111" not in text
    assert "IVF / exact: 22.2x one query per call" in text
    assert json.loads((tmp_path / "index_ivf.json").read_text())["ivf"]["qps_batch1"] == 222.0
    meta = {"cpu": "x", "cores": 2, "load_before": 1, "min_time": 1, "floor_ratios": {}}
    bench_index.write([], tmp_path / "index", meta)
    rewritten = (tmp_path / "index.md").read_text()
    assert "kept" not in rewritten and rewritten.count(bench_ivf.BEGIN) == 1 and "2,220" in rewritten


@pytest.mark.slow  # ~1-2 min: five processes that import TensorFlow; the only end-to-end run of the benchmark
def test_quick_run_writes_every_method(tmp_path):
    assert bench_ivf.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "index_ivf.json").read_text())
    assert [result[m]["status"] for m in ("exact", "ivf")] == ["ok", "ok"]
    assert result["ivf"]["recall_at_10"] >= 0.9 and len(result["ivf"]["curve"]) == len(bench_ivf.PROBES)
    assert "IVF SavedModel (defaults)" in (tmp_path / "index.md").read_text()
