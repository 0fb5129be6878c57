"""The package outside a clone: metadata, extras that install what they need, the built wheel."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import rankloss_tf

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_has_one_home():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rankloss_tf.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", rankloss_tf.__version__)
    assert f"## {rankloss_tf.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_licence_metadata_is_an_spdx_expression():
    """setuptools >= 77 warns (about 60 lines an install) on a licence table and licence classifiers."""
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert all((ROOT / name).is_file() for name in project["license-files"])
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(project["urls"])


def test_datasets_extra_brings_what_tensorflow_datasets_forgets():
    """tensorflow-datasets 4.9.10 imports importlib_resources without declaring it (tensorflow/datasets#11212)."""
    for extra in ("datasets", "test"):
        names = {re.split(r"[<>=;\[ ]", spec)[0].replace("_", "-").lower()
                 for spec in PYPROJECT["project"]["optional-dependencies"][extra]}
        assert {"tensorflow-datasets", "importlib-resources"} <= names, extra


def test_tensorflow_datasets_builds_and_loads():
    """The builder code path that died (checksums of a dataset's code) and a mocked load through our loader."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from rankloss_tf.datasets.tfds_sets import load_tfds

    assert tfds.builder_cls("cars196").url_infos is not None  # ModuleNotFoundError: importlib_resources
    with tfds.testing.mock_data(num_examples=6):
        images, labels = next(iter(load_tfds("cars196", "test", image_size=16).batch(6)))
    assert images.shape[1:] == (16, 16, 3) and images.dtype == "uint8"
    assert labels.numpy().min() >= 98  # the test half: classes 99-196


@pytest.mark.parametrize("path", ["runs/x", "exported/x", "indexes/x", "models/mine/1", "dist/x.whl"])
def test_what_the_commands_write_is_ignored_by_git(path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`python -m build`: the sdist and the wheel (setuptools >= 77 from the package index or pip's cache)."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("source") / "rankloss-tf"  # a copy: the build writes *.egg-info
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "*.egg-info", "__pycache__",
                                                                 "build", "dist", ".bench", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in result.stdout + result.stderr
    return out


@pytest.mark.slow  # builds an sdist and a wheel (about 1 min), then a smoke demo from a fresh venv (about 1 min)
def test_built_wheel_installs_in_a_clean_venv_and_its_demo_runs(dist, tmp_path):
    """The wheel installs without the clone and `rankloss-tf demo` runs from it.

    A full TensorFlow install would take the test budget, so the venv is created without system
    site-packages, the wheel is installed with --no-deps, and a .pth file lends it this venv's
    third-party packages (its own site-packages comes first, so `rankloss_tf` is the wheel's).
    """
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                           capture_output=True, text=True, timeout=300)
    assert twine.returncode == 0, twine.stdout + twine.stderr
    wheel = next(dist.glob("rankloss_tf-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "lent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   env=env, check=True, timeout=600)
    where = subprocess.run([str(python), "-c", "import rankloss_tf; print(rankloss_tf.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where
    demo = subprocess.run([str(venv / "bin" / "rankloss-tf"), "demo", "--out", "runs/demo"], cwd=tmp_path,
                          env=dict(env, RANKLOSS_TF_SMOKE="1"), capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "| recall@1 |" in demo.stdout and (tmp_path / "runs" / "demo_saved_model").is_dir()
