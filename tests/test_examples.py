"""Every example script runs end to end in smoke mode (`--smoke`), as a user would run it."""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(path.name for path in (ROOT / "examples").glob("[0-9][0-9]_*.py"))
# Library modules an example needs beyond the losses, data and datasets.
REQUIRES = {
    "01_quickstart.py": ("rankloss_tf.models", "rankloss_tf.evaluation", "rankloss_tf.export"),
    "03_tf1_session.py": ("rankloss_tf.compat.v1",),
    "04_multi_device.py": ("rankloss_tf.models",),
    "05_serving.py": ("rankloss_tf.models", "rankloss_tf.evaluation", "rankloss_tf.export", "rankloss_tf.retrieval"),
}
TIMEOUT_SECONDS = 300  # a hang fails; a slow, loaded machine does not (smoke runs take < 60 s)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One working directory for all examples: 05_serving serves what 01_quickstart exported."""
    return tmp_path_factory.mktemp("examples")


def skip_without_required_modules(name):
    missing = [module for module in REQUIRES.get(name, ()) if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, not in this checkout")


def run_example(name, workdir, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--smoke", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
    )
    return result, time.monotonic() - start


def test_every_example_is_listed():
    assert EXAMPLES == [
        "01_quickstart.py",
        "02_migrate_from_tfa.py",
        "03_tf1_session.py",
        "04_multi_device.py",
        "05_serving.py",
        "06_cross_modal.py",
    ]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_in_smoke_mode(name, workdir):
    skip_without_required_modules(name)
    result, seconds = run_example(name, workdir)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "Traceback" not in result.stderr
    if name == "05_serving.py":  # it serves the model 01_quickstart.py exported before it
        assert "not found" not in result.stdout, result.stdout
    print(f"{name}: {seconds:.1f} s")

