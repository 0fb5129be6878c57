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


def test_a_scope_is_its_threads_own_and_ends_even_on_an_error(tmp_path, scans):
    import threading

    folder = make_folder(tmp_path / "photos", {"a": 1, "b": 1})
    inside, leave = threading.Event(), threading.Event()

    def other_command():
        with folder_module.one_scan():
            folder_module.scan_folder(folder)
            inside.set()
            leave.wait(10)
            folder_module.scan_folder(folder)

    thread = threading.Thread(target=other_command)
    thread.start()
    inside.wait(10)
    with folder_module.one_scan():
        folder_module.scan_folder(folder)  # this thread's scope: a scan of its own, not the other's
    leave.set()
    thread.join(10)
    assert len(scans) == 2  # one per scope; the other thread's second call reused its own scope's scan
    with pytest.raises(RuntimeError), folder_module.one_scan():
        folder_module.scan_folder(folder)
        raise RuntimeError("a failed command")
    (folder / "c").mkdir()
    (folder / "a" / "0.png").rename(folder / "c" / "0.png")
    assert "c" in folder_module.scan_folder(folder).classes  # no scope left open: the folder as it is now


def test_one_scan_is_exported_by_datasets():
    from rankloss_tf import datasets
    from rankloss_tf.datasets import one_scan

    assert one_scan is folder_module.one_scan and "one_scan" in datasets.__all__


def test_a_scope_held_by_a_generator_finished_in_another_thread_is_closed(tmp_path, scans):
    import threading

    folder = make_folder(tmp_path / "photos", {"a": 1, "b": 1})

    def reader():
        with folder_module.one_scan():  # held across a yield: what one_scan's docstring warns against
            yield folder_module.scan_folder(folder)

    generator, errors = reader(), []
    next(generator)  # suspended inside its scope, which this thread now sees

    def finish():
        try:
            next(generator, None)
        except Exception as error:  # "Token was created in a different Context", before
            errors.append(error)

    thread = threading.Thread(target=finish)
    thread.start()
    thread.join(10)
    assert not errors
    (folder / "c").mkdir()
    (folder / "a" / "0.png").rename(folder / "c" / "0.png")
    assert "c" in folder_module.scan_folder(folder).classes  # the closed scope is not reused: the folder as it is
    with folder_module.one_scan():
        assert folder_module.scan_folder(folder).classes == ["b", "c"]  # a new scope, not the stale one's scans
    assert len(scans) == 3


def test_a_scope_exited_in_a_copied_context_leaves_that_context_as_it_was(tmp_path, scans):
    import contextvars

    folder = make_folder(tmp_path / "photos", {"a": 1, "b": 1})

    def reader():
        with folder_module.one_scan():
            yield folder_module.scan_folder(folder)

    generator = reader()
    next(generator)
    copied = contextvars.copy_context()  # holds the generator's scope, entered in this context
    copied.run(next, generator, None)  # the scope's token is not this copy's: the copy goes back to no scope
    assert copied.run(folder_module._SCANS.get) is None
    folder_module.scan_folder(folder)
    assert len(scans) == 2
