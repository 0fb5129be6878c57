"""The benchmark scripts: the loss sweep on a tiny batch, and parity with the real tfa / PML.

The parity test needs the pinned reference environments of benchmarks/envs.py
(`python benchmarks/envs.py`, a few minutes and ~2.5 GB); it is skipped without them.
"""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_distribute  # noqa: E402
import bench_losses  # noqa: E402
import envs  # noqa: E402


def test_loss_sweep_writes_tables_and_stops_a_series_at_the_memory_cap(tmp_path):
    out = tmp_path / "losses"
    bench_losses.main([
        "--impls", "ours", "--losses", "npair", "--batches", "16", "32",
        "--dims", "8", "--repeats", "1", "--min-time", "0", "--out", str(out),
    ])
    results = json.loads(out.with_suffix(".json").read_text())
    statuses = {(r["impl"], r["loss"], r["batch"]): r["status"] for r in results["results"]}
    assert statuses == {("ours", "npair", 16): "ok", ("ours", "npair", 32): "ok"}
    assert all(r["time_s"] > 0 and r["peak_rss_gb"] > 0.05 for r in results["results"])
    assert results["machine"]["cores"] >= 1
    table = out.with_suffix(".md").read_text()
    assert "## npair, D=8" in table and "| 32 |" in table

    # The N-pair floor: three [B/2, B/2] x D matmuls of two variables, a column of the N-pair table.
    bench_losses.main([
        "--impls", "ours", "matmul_tuples", "--losses", "npair", "--batches", "16", "--dims", "8",
        "--repeats", "1", "--min-time", "0", "--out", str(out),
    ])
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert {(r["impl"], r["status"]) for r in results} == {("ours", "ok"), ("matmul_tuples", "ok")}
    assert "N-pair matmul floor (TF)" in out.with_suffix(".md").read_text()

    # Rounds in alternation: the median round's record, every round's time listed.
    bench_losses.main([
        "--impls", "ours", "matmul_tuples", "--losses", "npair", "--batches", "16", "--dims", "8",
        "--repeats", "1", "--min-time", "0", "--rounds", "3", "--out", str(out),
    ])
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    for record in results:
        assert len(record["round_times_s"]) == 3 and record["time_s"] == sorted(record["round_times_s"])[1]
    assert "the cell is the median round" in out.with_suffix(".md").read_text()

    # A cap below what TensorFlow alone needs: the first run is killed, the larger B skipped.
    bench_losses.main([
        "--impls", "matmul", "--batches", "16", "32", "--dims", "8", "--repeats", "1",
        "--mem-cap-gb", "0.05", "--out", str(out),
    ])
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert [(r["batch"], r["status"]) for r in results] == [(16, "oom")]
    assert "OOM" in out.with_suffix(".md").read_text()


@pytest.mark.skipif(not (envs.is_ready("tfa") and envs.is_ready("pml")),
                    reason="reference environments absent: run benchmarks/envs.py")
@pytest.mark.parametrize("loss", ["contrastive", "triplet_hard", "npair"])
def test_cross_replica_table_times_both_forms_of_every_kind_of_loss(loss):
    # A pair share (contrastive), an anchor range (triplet) and a tuple share (N-pair) on a tiny batch.
    times = bench_distribute.time_ratio(loss, 4, 64, 8, 2, "shuffled")
    alone = {replicas: bench_distribute.time_kernel(loss, replicas, 64, 8, 1, "sampler") for replicas in (1, 4)}
    assert times["one_device_s"] > 0 and times["replicas_s"] > 0
    row = {"times": {**times, "load_before": 0.5}, "one_device": alone[1], "replicas": alone[4]}
    report = {"cross_replica": {"batch": 64, "dim": 8, "replicas": 4, "losses": {loss: {"shuffled": row}}}}
    table = bench_distribute.kernel_markdown(report)
    ratio = times["replicas_s"] / times["one_device_s"]
    assert f"| {loss} | shuffled |" in table and f"{ratio:.2f}x" in table


def test_parity_with_tfa_and_pml(tmp_path):
    import golden

    rows = golden.run(tmp_path)
    assert golden.failures(rows) == []
    assert {row["loss"] for row in rows} == {"semihard", "hard", "contrastive", "npairs", "angular"}
    assert sum("design_value" in row for row in rows) == 15


def test_every_script_run_all_passes_quick_to_accepts_it():
    import subprocess

    import run_all

    for name, script in run_all.scripts().items():
        if name == "golden":  # run_all runs the parity check in full
            continue
        help_text = subprocess.run([sys.executable, *map(str, script), "--help"], capture_output=True, text=True,
                                   timeout=120).stdout
        assert "--quick" in help_text, name


def test_harness_writes_results_and_describes_the_machine(tmp_path):
    from harness import machine, results

    watch = machine.Stopwatch()
    record = {"machine": machine.describe(), **watch.record()}
    results.write(tmp_path / "sub" / "page", record, "# page\n")
    assert results.read(tmp_path / "sub" / "page") == json.loads(json.dumps(record))
    assert (tmp_path / "sub" / "page.md").read_text() == "# page\n"
    assert results.read(tmp_path / "absent", []) == [] and record["machine"]["cpus"] >= 1
    assert "CPU cores" in machine.line() and len(machine.load(2)) == 3


@pytest.mark.parametrize("loss", ["proxy_anchor", "npair"])
def test_harness_fit_trains_a_class_head_only_for_class_losses(loss):
    import numpy as np
    import tensorflow as tf
    from harness.training import fit

    from rankloss_tf import losses
    from rankloss_tf.models import projection_head

    rng = np.random.default_rng(0)
    features = rng.normal(size=(24, 6)).astype(np.float32)
    labels = np.repeat([3, 7, 9], 8)  # not 0 .. C - 1: the class head numbers the distinct labels
    model = fit(lambda: projection_head(6, 4), losses.get(loss), features, labels, learning_rate=1e-2, steps=2,
                classes_per_batch=3, samples_per_class=2, seed=0)
    assert model.output_shape == (None, 4) and model.name == "projection_head"
    examples = tf.data.Dataset.from_tensor_slices((features, labels))
    model = fit(lambda: projection_head(6, 4), losses.get(loss), examples, None, learning_rate=1e-2, steps=1,
                classes_per_batch=3, samples_per_class=2, seed=0, batches=lambda batches: batches.take(1))
    assert model.output_shape == (None, 4)
