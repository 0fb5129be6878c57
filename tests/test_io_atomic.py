"""The one atomic writer: files, directories, the temporary-name scheme and what stale-temporary cleaning removes."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from rankloss_tf.backbones.files import atomic_savez
from rankloss_tf.io import atomic


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_write_file_text_bytes_and_callback(tmp_path):
    assert atomic.write_file(tmp_path / "a" / "t.txt", "é").read_text(encoding="utf-8") == "é"
    assert atomic.write_file(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    path = atomic_savez(tmp_path / "c.npz", x=np.arange(3))
    np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b.bin", "c.npz"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic.write_file(tmp_path / "model.keras", "old")

    def disk_full(temporary):
        assert temporary.endswith("-model.keras")  # writers that check the suffix accept it
        open(temporary, "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device", temporary)

    with pytest.raises(OSError, match="No space left") as error:
        atomic.write_file(path, disk_full)
    assert error.value.filename == str(path)  # the file the user knows, not its temporary
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["model.keras"]


def test_exclusive_write_never_replaces(tmp_path):
    path = atomic.write_file(tmp_path / "marker", "first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic.write_file(path, "second", exclusive=True)
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["marker"]


def test_write_directory_swaps_whole_directories(tmp_path):
    def write(text):
        return lambda directory: open(os.path.join(directory, "data.txt"), "w").write(text)

    path = atomic.write_directory(tmp_path / "out", write("one"), marker=("mark.json", "{}"))
    with pytest.raises(FileExistsError):
        atomic.write_directory(path, write("two"))
    atomic.write_directory(path, write("two"), marker=("mark.json", "{}"), replace=True)
    assert (path / "data.txt").read_text() == "two" and os.listdir(tmp_path) == ["out"]


def test_only_our_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = dead_pid()
    ours_dead = f".rankloss_tf-tmp-{dead}-0123abcd-run.json"
    ours_old = f".rankloss_tf-old-{dead}-0123abcd-export"
    ours_alive = f".rankloss_tf-tmp-{os.getpid()}-0123abcd-run.json"
    foreign = [".notes.tmp-1", f".run.json.tmp-{dead}", ".tmp-1-model.keras", f".rankloss_tf-tmp-{dead}-xyz-a"]
    for name in [ours_dead, ours_alive, *foreign]:
        (tmp_path / name).write_text("x")
    (tmp_path / ours_old).mkdir()
    assert atomic.remove_stale_temporaries(tmp_path, target="other") == []
    assert atomic.remove_stale_temporaries(tmp_path) == sorted([ours_dead, ours_old])
    assert sorted(os.listdir(tmp_path)) == sorted([ours_alive, *foreign])


def test_check_writable_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--out lies under a file .*notes.txt"):
        atomic.check_writable(tmp_path / "notes.txt" / "run", "--out")
    assert atomic.check_writable(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"
