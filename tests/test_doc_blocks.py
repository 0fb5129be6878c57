"""Every shell and Python block of README.md and docs/guide.md runs as written, so the pages cannot
drift from the code.

The blocks of a page run in order in one temporary directory (a later block uses what an earlier one
wrote), which holds what a reader is told to bring: ``data/`` (the shared data: the Omniglot zips),
``photos/`` (a folder of real car photos, one sub-folder per model) and ``query.jpg``. Training
commands are shortened by the documented knob ``RANKLOSS_TF_SMOKE=1`` (one epoch of two batches;
the examples and notebooks read it too). A block preceded by ``<!-- doc-test: skip (reason) -->``
is not run (it installs from the network or is this test suite), and says why.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/guide.md"]
RUN = ("bash", "python")
SKIP = re.compile(r"<!-- doc-test: skip \((?P<reason>[^)]+)\) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.S | re.M)
TIMEOUT_SECONDS = 900  # a hang fails; a loaded machine does not (a smoke training takes about a minute)


def blocks(page):
    """The fenced blocks of a page: (language, code, line, skip reason or None)."""
    text = (ROOT / page).read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.match(before)
        found.append((match["lang"], match["code"], text.count("\n", 0, match.start()) + 1,
                      skip["reason"] if skip else None))
    return found


def cases():
    return [pytest.param(page, line, lang, code, reason, id=f"{page}:{line}")
            for page in PAGES for lang, code, line, reason in blocks(page) if lang in RUN]


def test_every_block_is_run_or_says_why_not():
    for page in PAGES:
        for lang, _, line, reason in blocks(page):
            assert lang in (*RUN, "text", "toml"), f"{page}:{line}: a ```{lang} block: give it a language this test runs"
            assert reason is None or len(reason) > 10, f"{page}:{line}: a skip needs its reason"


def photo_folder(target, classes=4, per_class=6):
    """``photos/``: real Cars196 photos, one sub-folder per car model (the first models of the train split)."""
    cars = SHARED_DATA / "cars196"
    taken = {}
    with open(cars / "labels.csv", newline="") as rows:
        for row in csv.DictReader(rows):
            files = taken.setdefault(row["class_name"], []) if len(taken) < classes or row["class_name"] in taken else None
            if files is not None and len(files) < per_class and row["split"] == "train":
                files.append(cars / "cropped_train" / row["file"])
    for name, files in taken.items():
        (target / name).mkdir(parents=True)
        for path in files:
            shutil.copy(path, target / name / path.name)
    return next(iter(taken.values()))[0]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """One working directory per page, set up as the page tells a reader to set it up."""
    if not (SHARED_DATA / "omniglot").is_dir() or not (SHARED_DATA / "cars196" / "labels.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    made = {}
    for page in PAGES:
        work = tmp_path_factory.mktemp(Path(page).stem)
        (work / "data").symlink_to(SHARED_DATA)
        (work / "examples").symlink_to(ROOT / "examples")
        shutil.copy(photo_folder(work / "photos"), work / "query.jpg")
        made[page] = work
    return made


def run_block(lang, code, cwd):
    env = dict(os.environ, RANKLOSS_TF_SMOKE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = ["bash", "-eo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)


@pytest.mark.slow  # about 10 minutes: each training block is a smoke run, but each command loads TensorFlow
@pytest.mark.parametrize("page, line, lang, code, reason", cases())
def test_block_runs_as_written(page, line, lang, code, reason, workdirs):
    if reason:
        pytest.skip(reason)
    result = run_block(lang, code, workdirs[page])
    assert result.returncode == 0, f"{page}:{line} failed:\n{code}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert "`shuffle=True` was passed" not in result.stderr, f"{page}:{line}: Keras' shuffle warning"
