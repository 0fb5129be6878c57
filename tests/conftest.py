"""Shared test set-up: quiet TensorFlow, deterministic seeds, the shared data folder, the slow set."""

import os
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests left out of `make test` (<= 15 minutes on 2 cores) and run by `make test-slow` / CI, with
# why each is still worth its minutes. One home for the choice, beside the `slow` marks written on
# tests; "file::name" covers every parameter of a test, "file::name[id]" one; tests/test_slow_set.py
# checks the names. Times: tests/ on 2 shared cores at a load of 10-13 (about 4x a quiet machine).
_UNKNOWN_SHAPE = "test_losses.py::test_unknown_embedding_shape_under_tf_function_gives_the_eager_gradient"
_UNKNOWN_SHAPE_WHY = ("the tf.cond gradient assertion under unknown batch sizes (64-256 s each at load 12); "
                      "its fastest case, triplet_hard_loss-1.0-False-l2, stays in make test")
SLOW = {
    "test_notebooks.py::test_notebook_runs_in_smoke_mode":
        "the notebooks are the examples' code (test_examples runs it; test_docs checks the generation and "
        "the install cell); this catches what only a Jupyter kernel does",
    "test_distribute.py::test_mirrored_fit_equals_one_device":
        "one worker process fits every loss under MirroredStrategy with 2 replicas against one device (one "
        "traced fit per strategy; 309 s in CI while it also ran a custom loop and a second fit at 2 and 4 "
        "replicas): the only end-to-end check of cross-replica mining; the shares are checked in-process "
        "by test_blocks",
    "test_distribute.py::test_multiworker_custom_loop_equals_one_device":
        "shares the worker above (multi-worker strategy)",
    "test_faults.py::test_a_run_stopped_before_its_first_phase_takes_the_corrected_command":
        "two training subprocesses (~40 s): a kill between the start and the first phase (issue 27, second probe); "
        "in-process, test_user_errors covers the same rule",
    "test_index_build.py::test_a_sigkilled_console_build_resumes_from_its_finished_blocks":
        "a real SIGKILL of the console script once its first block file is on disk (~40 s: two processes); "
        "in-process, test_index_build stops a build after two blocks and checks the same resume",
    "test_pooling.py::test_a_gem_run_evaluates_the_same_from_its_export":
        "a frozen-features run with --pooling gem, exported and evaluated (~45 s under load): the export pools "
        "as the cached features did; in-process, test_gem_features_are_cached_apart_and_equal_the_backbone_s "
        "checks the backbone against the cache",
    "test_quality_benchmarks.py::test_recipe_shifts_smoke":
        "a 2-step Omniglot validation run saved, then its one-shot accuracy at 7 test-time shifts on the official "
        "runs (the shifts themselves: test_one_shot)",
    **{f"{_UNKNOWN_SHAPE}[{case}]": _UNKNOWN_SHAPE_WHY for case in (
        "contrastive_loss-0.5-l2", "contrastive_loss-1.0-l2", "triplet_semihard_loss-1.0-l2",
        "triplet_semihard_loss-0.2-l2", "triplet_hard_loss-1.0-True-l2")},
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    for item in items:
        path, _, name = item.nodeid.partition("::")
        key = f"{Path(path).name}::{name}"
        if key in SLOW or key.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def shared_data():
    """The shared real-data folder beside the repository (skips the test when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


class CliRun(NamedTuple):
    """What one ``rankloss-tf`` command did: its exit status and what it printed."""

    status: int
    out: str
    err: str

    @property
    def printed(self):
        """stdout then stderr: everything the command printed."""
        return self.out + self.err


def run_cli(capsys, *argv):
    """Runs ``rankloss-tf ARGV`` in this process (``app.cli.main``); a ``CliRun`` (argparse's exits give their status)."""
    from rankloss_tf.app import cli

    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return CliRun(status, captured.out, captured.err)
