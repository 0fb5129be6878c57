"""Run every benchmark under benchmarks/ (what `make bench` calls).

Creates the pinned reference environments first (``envs.py``), then runs the
parity check (``golden.py``), the untuned loss table (``reproduction.py``),
every ``bench_*.py`` script found beside this file and, where the data is in
../shared/data, the tuned loss comparison (``fair_comparison.py`` on Omniglot
and on Cars196), each in its own process with its default options, one after
the other.
Each script writes its JSON and Markdown results under ``benchmarks/results/``.
A failing script does not stop the others; the exit status is 1 if any failed.

Every benchmark script accepts ``--quick`` (a small, fast run whose results go
under ``.bench/``); ``run_all.py --quick`` passes it on.

Usage::

    python benchmarks/run_all.py                 # everything (hours on 2 cores; the
                                                 # fair comparison alone ~1 h per dataset)
    python benchmarks/run_all.py --quick         # a smoke run of everything
    python benchmarks/run_all.py --only losses golden
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402  (benchmarks/ is not a package)


def scripts():
    """{short name: [script, arguments...]}: golden, bench_losses, the other bench_*.py, the fair comparisons last."""
    found = {"golden": [HERE / "golden.py"], "reproduction": [HERE / "reproduction.py"]}
    # bench_gpu.py is the one-GPU benchmark, run on a device by hand, not in this CPU sweep.
    found.update({path.stem[len("bench_"):]: [path] for path in sorted(HERE.glob("bench_*.py"))
                  if path.stem != "bench_gpu"})
    order = ["golden", "losses"]
    ordered = {name: found[name] for name in order + sorted(set(found) - set(order)) if name in found}
    for dataset in ("omniglot", "cars196"):  # each skips itself when its data is absent
        ordered[f"fair_{dataset}"] = [HERE / "fair_comparison.py", "--dataset", dataset]
    return ordered


def main(argv=None):
    available = scripts()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="+", choices=sorted(available), help="run only these")
    parser.add_argument("--skip", nargs="+", choices=sorted(available), default=[], help="do not run these")
    args = parser.parse_args(argv)
    for name in sorted(envs.ENVS):
        envs.ensure(name)
    paths = [str(ROOT), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    outcomes = []
    for name, script in available.items():
        if (args.only and name not in args.only) or name in args.skip:
            continue
        command = [sys.executable, *map(str, script)] + (["--quick"] if args.quick and name != "golden" else [])
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.monotonic()
        code = subprocess.run(command, env=env, cwd=ROOT).returncode
        outcomes.append((name, code, time.monotonic() - start))
    print("\n== summary")
    for name, code, seconds in outcomes:
        print(f"{name:20s} {'ok' if code == 0 else f'FAILED (exit {code})':18s} {seconds:8.0f} s")
    return 1 if any(code for _, code, _ in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
