"""Loss kernels, forward + backward: rankloss_tf vs tensorflow-addons vs pytorch-metric-learning.

Every (implementation, loss, batch size B, dimension D) runs in a fresh
subprocess (``_loss_worker.py``) in its own environment:

* ``ours``: rankloss_tf in this interpreter's environment, under ``tf.function``;
  ``ours_xla``: the same under ``tf.function(jit_compile=True)``.
* ``tfa``: tensorflow-addons 0.23 on TensorFlow 2.15.1 (``.bench/venv-tfa``), under
  ``tf.function``.
* ``pml``: pytorch-metric-learning 2.9 on PyTorch 2.13 CPU (``.bench/venv-pml``), eager.
* ``matmul``: the floor, ``sum(E @ E^T)`` forward + backward in this environment's
  TensorFlow; ``matmul_torch``: the same in PyTorch; ``matmul_tuples``: the N-pair
  floor, ``sum(A @ P^T)`` forward + backward for anchors and positives A, P [B/2, D]
  (the three [B/2, B/2] x D matmuls that any float32 N-pair loss of the batch does).

Inputs: random L2-normalised embeddings ``[B, D]``, labels of B/4 classes x 4
samples (B/2 classes x 2 samples for the N-pair losses, Sohn's N-pair batch).
The worker warms up once (tracing), then times passes and reports the median;
the memory figure is the peak resident memory of the whole worker process. The
parent polls the worker's resident memory and kills it above ``--mem-cap-gb``
(recorded as OOM), or after ``--timeout`` seconds; larger B for that series are
then skipped. A run stopped because the (shared) machine ran low on memory is
retried once when memory is free again.

Results: ``<out>.json`` (every measurement and the machine), ``<out>.md`` (a
table per loss and D, and the headline ratios) and ``<out>_D<d>.png`` plots.

Usage::

    python benchmarks/bench_losses.py                      # full sweep (hours)
    python benchmarks/bench_losses.py --quick              # B 256, 1024; D 128
    python benchmarks/bench_losses.py --losses semihard --impls ours tfa --batches 256 1024
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402  (benchmarks/ is not a package)
from harness import machine, results as results_file  # noqa: E402

LOSSES = ["semihard", "hard", "contrastive", "npair", "angular", "npair_angular"]
IMPLS = ["ours", "ours_xla", "ours_before", "ours_before_xla", "tfa", "pml", "matmul", "matmul_torch", "matmul_tuples"]
FLOORS = ("matmul", "matmul_torch", "matmul_tuples")
DEFAULT_MEM_CAP_GB = 16.0
SUPPORTED = {
    "ours": set(LOSSES),
    "ours_xla": set(LOSSES),
    "ours_before": set(LOSSES),
    "ours_before_xla": set(LOSSES),
    "tfa": {"semihard", "hard", "contrastive", "npair"},
    "pml": {"semihard", "hard", "contrastive", "npair", "angular"},
}
IMPL_ENV = {"tfa": "tfa", "pml": "pml", "matmul_torch": "pml"}
LABELS = {
    "ours": "ours",
    "ours_xla": "ours (XLA)",
    "ours_before": "ours before (--before)",
    "ours_before_xla": "ours before (--before, XLA)",
    "tfa": "tfa 0.23",
    "pml": "PML 2.9",
    "matmul": "matmul floor (TF)",
    "matmul_torch": "matmul floor (torch)",
    "matmul_tuples": "N-pair matmul floor (TF)",
}
DESCRIPTIONS = {
    "semihard": "Triplet, semi-hard mining. ours / tfa: `TripletSemiHardLoss()` (FaceNet rule, "
    "margin 1, l2). PML: `TripletMarginLoss(margin=1)` + `TripletMarginMiner(margin=1, "
    "type_of_triplets='semihard')` (all semi-hard triplets: a different rule, same job).",
    "hard": "Triplet, batch-hard mining. ours / tfa: `TripletHardLoss()` (margin 1, l2). "
    "PML: `TripletMarginLoss(margin=1)` + `BatchHardMiner()`.",
    "contrastive": "Contrastive, all pairs. ours: `ContrastiveLoss()`. tfa: `ContrastiveLoss()` "
    "on the flattened `pairwise_distance` matrix and pair labels. PML: "
    "`ContrastiveLoss(pos_margin=0, neg_margin=1)`.",
    "npair": "Multi-class N-pair, batch of B/2 classes x 2. ours: `NPairLoss(l2_reg=0)`. "
    "tfa: `NpairsLoss()` on S = E[0::2] @ E[1::2]^T (the matmul is timed). PML: `NPairsLoss()`.",
    "angular": "Angular, alpha 45 degrees. ours: `AngularLoss(alpha=45)`. PML: `AngularLoss(alpha=45)`.",
    "npair_angular": "N-pair + angular (Wang et al. Eq. 9), B/2 classes x 2. ours only.",
}


def per_class(loss):
    """Samples per class in the benchmark batch of ``loss``."""
    return 2 if loss in ("npair", "npair_angular") else 4


def mem_available_gb():
    """MemAvailable of the machine, in GB."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    return float("inf")


def process_rss_gb(pid):
    """Resident memory of process ``pid`` in GB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1e6
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def wait_for_memory(needed_gb, patience_s):
    """Wait until the machine has ``needed_gb`` available; False after ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while mem_available_gb() < needed_gb:
        if time.monotonic() > deadline:
            return False
        time.sleep(5.0)
    return True


def python_for(impl):
    """The interpreter that runs ``impl``."""
    env_name = IMPL_ENV.get(impl)
    return str(envs.venv_python(env_name)) if env_name else sys.executable


def run_config(config, timeout, mem_cap_gb, mem_reserve_gb, before=None):
    """Run one worker, watching its memory and time; return its result dict.

    ``ours_before*`` imports rankloss_tf from ``before`` (an export of an earlier commit).
    """
    source = before if config["impl"].startswith("ours_before") else ROOT
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
        filter(None, [str(source), os.environ.get("PYTHONPATH", "")])))
    # PyTorch's OpenMP threads spin-wait by default and stall badly when another process holds
    # a core (a shared machine); passive waiting keeps its timings stable.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [python_for(config["impl"]), str(HERE / "_loss_worker.py"), json.dumps(config)],
            stdout=out, stderr=err, env=env,
        )
        start, peak, killed = time.monotonic(), 0.0, None
        while process.poll() is None:
            peak = max(peak, process_rss_gb(process.pid))
            if peak > mem_cap_gb:
                killed = {"status": "oom", "error": f"resident memory above {mem_cap_gb:g} GB"}
            elif mem_available_gb() < mem_reserve_gb:
                killed = {"status": "aborted", "error": "the machine ran low on memory"}
            elif time.monotonic() - start > timeout:
                killed = {"status": "timeout", "error": f"over {timeout:g} s"}
            if killed:
                process.kill()
                process.wait()
                return dict(killed, peak_rss_gb=peak)
            time.sleep(0.05)
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("RESULT ")]
        if lines:
            return json.loads(lines[-1][len("RESULT "):])
        err.seek(0)
        return {"status": "error", "error": err.read()[-500:], "peak_rss_gb": peak}


def machine_description(impls):
    """CPU, cores, memory, OS and the framework versions in use."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_gb = int(meminfo.readline().split()[1]) / 1e6
    try:
        ours = [metadata.version("tensorflow"), metadata.version("keras")]
    except metadata.PackageNotFoundError:
        ours = []
    description = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(total_gb, 1),
        "os": machine.describe()["platform"],
        "python": machine.describe()["python"],
        "ours": f"TensorFlow {ours[0]}, Keras {ours[1]}" if len(ours) == 2 else "unknown",
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    if "tfa" in impls and envs.is_ready("tfa"):
        description["tfa"] = "TensorFlow {} + tensorflow-addons {}".format(*envs.versions("tfa").split())
    if {"pml", "matmul_torch"} & set(impls) and envs.is_ready("pml"):
        description["pml"] = "PyTorch {} + pytorch-metric-learning {}".format(*envs.versions("pml").split())
    return description


def configurations(args):
    """Yield (impl, loss, dim, batch) in run order: every implementation of one (loss, D, B)
    back to back (``args.rounds`` times over), so that a change in the machine's load hits all
    sides of a ratio alike."""
    for dim in args.dims:
        batches = [b for b in args.batches if dim != 512 or b <= args.max_batch_d512]
        floors = [impl for impl in args.impls if impl in FLOORS]
        groups = [("matmul", floors)] if floors else []
        for loss in args.losses:
            impls = [impl for impl in args.impls if impl not in FLOORS and loss in SUPPORTED[impl]]
            if impls:
                groups.append((loss, impls))
        for loss, impls in groups:
            for batch in batches:
                for _ in range(args.rounds):
                    for impl in impls:
                        yield impl, loss, dim, batch


def combine_rounds(results):
    """One record of a configuration's rounds: the round whose time is the median of the
    rounds' (the upper one of an even count), with every round's time and peak memory listed."""
    ok = sorted((r for r in results if r["status"] == "ok"), key=lambda r: r["time_s"])
    if len(ok) < len(results):
        return next(r for r in results if r["status"] != "ok")
    combined = dict(ok[len(ok) // 2])
    if len(results) > 1:
        combined["round_times_s"] = [r["time_s"] for r in results]
        combined["peak_rss_gb"] = max(r["peak_rss_gb"] for r in results)
    return combined


def sweep(args, records):
    """Run every configuration asked for, updating ``records`` (keyed) and saving as it goes.

    A series (impl, loss, D) stops at its first batch that does not finish."""
    stopped, rounds = set(), {}
    for impl, loss, dim, batch in configurations(args):
        if (impl, loss, dim) in stopped:
            continue
        config = {
            "impl": impl, "loss": loss, "batch": batch, "dim": dim,
            "per_class": per_class(loss), "repeats": args.repeats,
            "budget_s": args.budget, "min_time_s": args.min_time, "seed": 0,
        }
        load = machine.load()[0]
        result = run_config(config, args.timeout, args.mem_cap_gb, args.mem_reserve_gb, args.before)
        if result["status"] == "aborted" and wait_for_memory(args.mem_cap_gb + 2.0, args.wait):
            load = machine.load()[0]
            result = run_config(config, args.timeout, args.mem_cap_gb, args.mem_reserve_gb, args.before)
        result.update(impl=impl, loss=loss, batch=batch, dim=dim, load_before=round(load, 2),
                      mem_cap_gb=args.mem_cap_gb)
        rounds.setdefault((impl, loss, batch, dim), []).append(result)
        print(f"{impl:12s} {loss:13s} D={dim:<4d} B={batch:<6d} {format_cell(result)}", flush=True)
        if len(rounds[(impl, loss, batch, dim)]) == args.rounds or result["status"] != "ok":
            records[(impl, loss, batch, dim)] = combine_rounds(rounds[(impl, loss, batch, dim)])
            save(args, records)
        if result["status"] != "ok":
            stopped.add((impl, loss, dim))


def format_time(seconds):
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def format_cell(result):
    """Table cell: ``time / peak GB`` or what stopped the run."""
    if result is None:
        return "–"
    status = result["status"]
    if status == "ok":
        cell = f"{format_time(result['time_s'])} / {result['peak_rss_gb']:.2f} G"
        if result["peak_rss_gb"] > DEFAULT_MEM_CAP_GB:
            cell += f" (over the {DEFAULT_MEM_CAP_GB:g} G cap: rerun with {result['mem_cap_gb']:g} G)"
        return cell
    return {"oom": "OOM", "timeout": "timeout", "aborted": "aborted", "error": "error"}[status]


def largest_ok(records, impl, loss, dim):
    sizes = [key[2] for key, r in records.items()
             if key[:2] == (impl, loss) and key[3] == dim and r["status"] == "ok"
             and r["peak_rss_gb"] <= DEFAULT_MEM_CAP_GB]
    return max(sizes) if sizes else None


def ratio(records, loss, impl, batch, dim):
    """time(ours) / time(impl) at (loss, batch, dim), or None."""
    ours, other = records.get(("ours", loss, batch, dim)), records.get((impl, loss, batch, dim))
    if not ours or not other or ours["status"] != "ok":
        return None
    if other["status"] != "ok":
        return 0.0  # the other side did not finish: ours is infinitely faster
    return ours["time_s"] / other["time_s"]


def format_ratio(value, other_result):
    if value is None:
        return "–"
    if value == 0.0:
        return f"ours finishes, other {format_cell(other_result)}"
    return f"{value:.3g} ({1 / value:.3g}x faster)" if value < 1 else f"{value:.3g} ({value:.3g}x slower)"


def _rounds_note(records):
    rounds = max([len(r.get("round_times_s", [])) for r in records.values()] + [1])
    return (f"; where run in rounds (up to {rounds}, in alternation), the cell is the median round (the "
            "JSON lists every round's time)") if rounds > 1 else ""


def _higher_cap_note(settings, records):
    """A line naming the configurations re-run with a higher memory cap (``--update``)."""
    rerun = sorted({(r["loss"], r["batch"], r["dim"]) for r in records.values()
                    if r.get("mem_cap_gb", settings["mem_cap_gb"]) > settings["mem_cap_gb"]})
    if not rerun:
        return []
    names = ", ".join(f"{loss} B={batch} D={dim}" for loss, batch, dim in rerun)
    return [f"Re-run with a higher memory cap, every implementation side by side in one invocation, so "
            f"that a library needing more than {settings['mem_cap_gb']:g} GB still gets a time: {names}. "
            "Largest B still counts only runs within the cap.", ""]


def markdown(machine, settings, records):
    """The Markdown report of every record."""
    dims = sorted({key[3] for key in records})
    losses = [loss for loss in LOSSES if any(key[1] == loss for key in records)]
    lines = [
        "# Loss kernels: forward + backward",
        "",
        "Produced by `python benchmarks/bench_losses.py` (`make bench`). Each cell: median wall time of "
        "one forward+backward pass / peak resident memory of the whole process (framework included), "
        "each configuration in a fresh process. OOM: resident memory passed "
        f"{settings['mem_cap_gb']:g} GB (or the framework failed to allocate); timeout: over "
        f"{settings['timeout']:g} s; –: not run (a smaller B already failed, or not available).",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()) + ".",
        "",
        *_higher_cap_note(settings, records),
        f"Settings: repeats {settings['repeats']} (fewer when a pass takes over "
        f"{settings['budget']:g} s / repeats), one warm-up pass. The implementations of one (loss, D, B) "
        f"run back to back{_rounds_note(records)}. The machine is shared: "
        "the 1-minute load average before each run is in the JSON (`load_before`).",
        "",
    ]
    headline_batch = 1024
    lines += [
        f"Largest B: the largest batch that ran within {DEFAULT_MEM_CAP_GB:g} GB and the timeout.",
        "",
    ]
    for dim in dims:
        lines += [
            f"## Headline (D={dim}, B={headline_batch})",
            "",
            "| loss | ours | ours/tfa time | ours/PML time | largest B: ours / tfa / PML |",
            "| --- | --- | --- | --- | --- |",
        ]
        for loss in losses:
            ours = records.get(("ours", loss, headline_batch, dim))
            cells = [loss, format_cell(ours)]
            for impl in ("tfa", "pml"):
                other = records.get((impl, loss, headline_batch, dim))
                cells.append(format_ratio(ratio(records, loss, impl, headline_batch, dim), other)
                             if loss in SUPPORTED[impl] else "n/a")
            largest = [largest_ok(records, impl, loss, dim) if loss in SUPPORTED[impl] else "n/a"
                       for impl in ("ours", "tfa", "pml")]
            cells.append(" / ".join("–" if x is None else str(x) for x in largest))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for dim in dims:
        batches = sorted({key[2] for key in records if key[3] == dim})
        for loss in losses:
            impls = [i for i in IMPLS if i not in FLOORS and loss in SUPPORTED[i]
                     and any(k[0] == i and k[1] == loss and k[3] == dim for k in records)]
            floors = [f for f in FLOORS if any(k[0] == f and k[3] == dim for k in records)]
            if not impls:
                continue
            lines += [f"## {loss}, D={dim}", "", DESCRIPTIONS[loss], ""]
            lines.append("| B | " + " | ".join(LABELS[i] for i in impls + floors) + " |")
            lines.append("| --- " * (1 + len(impls) + len(floors)) + "|")
            for batch in batches:
                cells = [format_cell(records.get((i, loss, batch, dim))) for i in impls]
                cells += [format_cell(records.get((f, "matmul", batch, dim))) for f in floors]
                lines.append(f"| {batch} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def plot(out, records):
    """Time vs B, one panel per loss, one figure per D (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    for dim in sorted({key[3] for key in records}):
        losses = [loss for loss in LOSSES if any(k[1] == loss and k[3] == dim for k in records)]
        if not losses:
            continue
        figure, axes = plt.subplots(1, len(losses), figsize=(4 * len(losses), 3.6), squeeze=False)
        for axis, loss in zip(axes[0], losses):
            for impl in IMPLS:
                key_loss = "matmul" if impl in FLOORS else loss
                points = sorted((k[2], r["time_s"]) for k, r in records.items()
                                if k[0] == impl and k[1] == key_loss and k[3] == dim and r["status"] == "ok")
                if points:
                    style = ":" if impl in FLOORS else "-"
                    color = f"C{IMPLS.index(impl)}"
                    axis.plot(*zip(*points), style, marker="o", color=color, label=LABELS[impl])
            axis.set(xscale="log", yscale="log", xlabel="B", title=f"{loss}, D={dim}")
            axis.set_xscale("log", base=2)
        axes[0][0].set_ylabel("forward+backward time (s)")
        handles = {label: line for axis in axes[0] for line, label in zip(*axis.get_legend_handles_labels())}
        figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
        figure.tight_layout(rect=(0, 0.08, 1, 1))
        figure.savefig(f"{out}_D{dim}.png", dpi=90)
        plt.close(figure)


def save(args, records):
    settings = {k: getattr(args, k) for k in ("repeats", "rounds", "budget", "min_time", "timeout", "mem_cap_gb",
                                              "max_batch_d512")}
    # --update keeps the settings of the run it adds to; each record holds its own cap.
    settings = getattr(args, "previous_settings", None) or settings
    payload = {"machine": args.machine, "settings": settings,
               "results": [records[key] for key in sorted(records, key=str)]}
    results_file.write(Path(args.out), payload, markdown(args.machine, settings, records) + "\n")


def load(path):
    """Records of an earlier run, keyed by (impl, loss, batch, dim)."""
    if not path.exists():
        return {}
    results = json.loads(path.read_text())["results"]
    return {(r["impl"], r["loss"], r["batch"], r["dim"]): r for r in results}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=LOSSES)
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=IMPLS)
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--dims", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--max-batch-d512", type=int, default=16384, help="largest B tried at D=512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the implementations of each (loss, D, B) this many times in alternation "
                             "and keep the median round (a shared machine's load moves the ratios less)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of timed passes per configuration")
    parser.add_argument("--min-time", type=float, default=2.0,
                        help="keep timing fast kernels (up to 50 passes) until this many seconds")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument("--mem-cap-gb", type=float, default=DEFAULT_MEM_CAP_GB)
    parser.add_argument("--mem-reserve-gb", type=float, default=1.0,
                        help="abort a run when the machine has less memory available than this")
    parser.add_argument("--wait", type=float, default=600.0,
                        help="after a run aborted for lack of machine memory, wait up to this many "
                        "seconds for memory to free up, then retry it once")
    parser.add_argument("--out", default=str(HERE / "results" / "losses"), help="output path without suffix")
    parser.add_argument("--update", action="store_true", help="merge into the existing results at --out")
    parser.add_argument("--before", default=str(ROOT / ".bench" / "before"),
                        help="an export of an earlier commit (git archive main | tar -x -C DIR) that "
                        "the ours_before implementations import rankloss_tf from")
    parser.add_argument("--quick", action="store_true",
                        help="B 256 and 1024, D 128, 3 repeats, 120 s timeout, results under .bench/")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.dims, args.repeats, args.timeout = [256, 1024], [128], 3, 120.0
        if args.out == parser.get_default("out"):
            args.out = str(ROOT / ".bench" / "results-quick" / "losses")
    for name in ("batches", "dims"):
        bad = [v for v in getattr(args, name) if v < 4 or v % 4]
        if bad:
            parser.error(f"--{name} must be positive multiples of 4. Received: {bad}")
    args.batches = sorted(set(args.batches))
    return args


def main(argv=None):
    args = parse_args(argv)
    for name in sorted({IMPL_ENV[i] for i in args.impls if i in IMPL_ENV}):
        try:
            envs.ensure(name)
        except (subprocess.CalledProcessError, SystemExit) as error:
            print(f"Reference environment {name!r} unavailable ({error}); skipping it.", file=sys.stderr)
            args.impls = [i for i in args.impls if IMPL_ENV.get(i) != name]
    args.machine = machine_description(args.impls)
    out = Path(args.out)
    records = load(out.with_suffix(".json")) if args.update else {}
    if records:
        args.previous_settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    sweep(args, records)
    save(args, records)
    plot(args.out, records)
    print(f"Wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
