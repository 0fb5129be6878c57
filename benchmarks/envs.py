"""Create the pinned reference environments the benchmarks compare against.

Two virtual environments live under ``.bench/`` (git-ignored) at the root of the
repository, each built once and reused afterwards:

* ``.bench/venv-tfa``: TensorFlow 2.15.1 (CPU) + tensorflow-addons 0.23.0, the
  last release pair in which tensorflow-addons imports and runs.
* ``.bench/venv-pml``: PyTorch 2.13.0 (CPU) + pytorch-metric-learning 2.9.0.

Both need Python 3.11 (the newest Python that TensorFlow 2.15 supports). The
interpreter is taken from ``--python``, else ``python3.11`` on ``PATH``, else the
running interpreter when it is 3.9-3.11.

Usage::

    python benchmarks/envs.py            # create both (idempotent)
    python benchmarks/envs.py tfa        # only one
    python benchmarks/envs.py --check    # exit 1 unless both are ready
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".bench"

# name -> (pip requirements, import statement that must succeed, version probe)
ENVS = {
    "tfa": (
        ["tensorflow-cpu==2.15.1", "tensorflow-addons==0.23.0", "numpy<2"],
        "import tensorflow, tensorflow_addons",
        "import tensorflow as t, tensorflow_addons as a; print(t.__version__, a.__version__)",
    ),
    "pml": (
        # torch first and alone: pip takes the CPU wheel of this exact release.
        ["torch==2.13.0", "pytorch-metric-learning==2.9.0"],
        "import torch, pytorch_metric_learning",
        "import torch, pytorch_metric_learning as p; print(torch.__version__, p.__version__)",
    ),
}


def venv_python(name):
    """Path of the interpreter of reference environment ``name`` ("tfa" or "pml")."""
    return BENCH_DIR / f"venv-{name}" / "bin" / "python"


def _base_python(explicit):
    if explicit:
        return explicit
    found = shutil.which("python3.11")
    if found:
        return found
    if (3, 9) <= sys.version_info[:2] <= (3, 11):
        return sys.executable
    raise SystemExit(
        "Python 3.11 is needed for the TensorFlow 2.15 reference environment; "
        "pass --python /path/to/python3.11."
    )


def is_ready(name):
    """True when the environment exists and its packages import."""
    python = venv_python(name)
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", ENVS[name][1]],
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return probe.returncode == 0


def versions(name):
    """The package versions of a ready environment, as one string."""
    out = subprocess.run(
        [str(venv_python(name)), "-c", ENVS[name][2]],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return out.stdout.strip()


def ensure(name, base_python=None):
    """Create environment ``name`` unless it is already ready; return its python."""
    if name not in ENVS:
        raise ValueError(f"Unknown environment; expected one of {sorted(ENVS)}. Received: {name!r}")
    python = venv_python(name)
    if is_ready(name):
        return python
    BENCH_DIR.mkdir(exist_ok=True)
    venv_dir = python.parents[1]
    if not python.exists():
        subprocess.run([_base_python(base_python), "-m", "venv", str(venv_dir)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    for requirement in ENVS[name][0]:
        subprocess.run(pip + [requirement], check=True)
    if not is_ready(name):
        raise SystemExit(f"Environment {venv_dir} was built but its packages do not import.")
    return python


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=sorted(ENVS), help="tfa and/or pml")
    parser.add_argument("--python", help="Python 3.11 interpreter to build the venvs from")
    parser.add_argument("--check", action="store_true", help="only report whether they are ready")
    args = parser.parse_args(argv)
    ok = True
    for name in args.names:
        if args.check:
            ready = is_ready(name)
            ok &= ready
            print(f"{name}: {'ready' if ready else 'missing'} ({venv_python(name)})")
        else:
            ensure(name, args.python)
            print(f"{name}: ready ({versions(name)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
