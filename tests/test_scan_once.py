"""Issue 29: one command scans a folder dataset once (the scan stamps and checks every file: minutes on a big folder)."""

import pytest

from rankloss_tf.datasets import folder as folder_module
from tests.conftest import run_cli
from tests.test_runs import FOLDER_FAST, make_folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def scans(monkeypatch):
    """The folders listed and stamped, one entry per scan."""
    done, listed = [], folder_module._list_candidates

    def counted(root):
        done.append(str(root))
        return listed(root)

    monkeypatch.setattr(folder_module, "_list_candidates", counted)
    return done


def test_train_index_and_evaluate_over_a_folder_scan_it_once_each(tmp_path, capsys, scans):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    run = tmp_path / "run"
    done = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--out", run)
    assert done.status == 0, done.printed
    assert len(scans) == 1, scans  # the recipe's sample, the train and test splits and the recorded split share it
    scans.clear()
    done = run_cli(capsys, "evaluate", "--model", run, "--dataset", f"folder:{folder}")
    assert done.status == 0 and len(scans) == 1, (done.printed, scans)
    scans.clear()
    done = run_cli(capsys, "index", "--model", run, "--gallery", f"folder:{folder}", "--out", tmp_path / "index")
    assert done.status == 0 and len(scans) == 1, (done.printed, scans)


def test_a_scan_outside_a_command_is_made_each_time(tmp_path, scans):
    folder = make_folder(tmp_path / "photos", {"a": 1, "b": 1})
    folder_module.scan_folder(folder), folder_module.scan_folder(folder)
    assert len(scans) == 2  # a long-lived process sees the folder as it is now
    with folder_module.one_scan():
        first = folder_module.scan_folder(folder)
        with folder_module.one_scan():
            assert folder_module.scan_folder(f"{folder}/.") is first
    assert len(scans) == 3
