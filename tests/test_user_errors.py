"""The second outside probe of issue 27: user errors met late, damaged records, huge sizes, stale caches, odd paths.

Every case runs the command as a user does (``cli.main`` with its arguments, or
a subprocess where the process's own streams matter) and checks the outcome:
exit 0, or 2 with one line naming the input, never a traceback, and nothing
left behind by a command that was refused.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.app import runner
from rankloss_tf.app.run_dir import RunDirectory
from rankloss_tf.datasets.tfrecord import _example
from tests.conftest import run_cli as run_command
from tests.test_runs import FAST, FOLDER_FAST, config, make_folder, one_line, read_only  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
NO_P = [*FOLDER_FAST[:8], "--samples-per-class", "2", "--no-plots", "--verbose", "0"]  # P left to the data


def run_cli(capsys, *argv):
    """``(exit status, everything printed)`` of ``rankloss-tf ARGV`` run in this process."""
    done = run_command(capsys, *argv)
    return done.status, done.printed


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLOSS_TF_CACHE", str(tmp_path / "cache"))


def write_records(path, folder, damage=None):
    """The images of a ``make_folder`` folder as one TFRecord file; ``damage``: ``{(class, image): bytes}``."""
    damage = damage or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label, class_dir in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
            for number, image in enumerate(sorted(class_dir.iterdir())):
                encoded = damage.get((class_dir.name, number), image.read_bytes())
                writer.write(_example(encoded, label, class_dir.name))
    return path


# --- 1. a user error found late leaves no run behind; a run that never began takes the corrected command -----

@pytest.mark.parametrize("dataset", ["nosuch", "tfrecord:{tmp}/none-*.tfrecord", "tfrecord:{tmp}/records/*",
                                     "tfrecord:{tmp}/six.tfrecord --classes-per-batch 5"])
def test_a_dataset_error_leaves_no_run_directory_and_the_corrected_command_runs(tmp_path, capsys, dataset):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    write_records(tmp_path / "six.tfrecord", folder)
    (tmp_path / "records" / "old.tfrecord").mkdir(parents=True)  # a directory the pattern matches
    name, *extra = dataset.format(tmp=tmp_path).split()
    run = tmp_path / "run"
    status, out = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", name, *extra, "--out", run)
    assert status == 2 and one_line(out), out
    assert not run.exists()
    status, out = run_cli(capsys, "train", *FAST, "--out", run)
    assert status == 0, out


def test_an_empty_tfrecord_file_is_one_line_naming_it(tmp_path, capsys):
    empty = tmp_path / "empty.tfrecord"
    with tf.io.TFRecordWriter(str(empty)):
        pass  # a TFRecord file of no record
    status, out = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"tfrecord:{empty}", "--out", tmp_path / "run")
    assert status == 2 and one_line(out), out
    assert "no records" in out and str(empty) in out and "unpack" not in out, out
    assert not (tmp_path / "run").exists()


def test_a_run_that_never_reached_its_first_phase_takes_the_corrected_command(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with RunDirectory(run).locked() as directory:  # what a kill right after the start leaves
        directory.start(config(tmp_path, dataset="digits", classes_per_batch=4).resolved())
    status, out = run_cli(capsys, "train", *FAST, "--out", run)
    assert status == 0 and "another configuration" not in out, out

    def refuse(*args, **kwargs):
        raise ValueError("a user error found after the start")

    monkeypatch.setattr(runner, "protocol", refuse)
    fresh = tmp_path / "fresh"
    status, out = run_cli(capsys, "train", *FAST, "--out", fresh)
    assert status == 2 and "found after the start" in out and not fresh.exists()
    (tmp_path / "mine").mkdir()  # a directory the user made: emptied of our files, kept
    status, out = run_cli(capsys, "train", *FAST, "--out", tmp_path / "mine")
    assert status == 2 and list((tmp_path / "mine").iterdir()) == []


# --- 2. tracebacks that are user errors: damaged records, huge sizes, out of memory -------------------------

def test_records_that_hold_no_image_are_left_out_and_a_damaged_one_is_named(tmp_path, capsys, caplog):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    write_records(tmp_path / "text.tfrecord", folder, {("b", 1): b"not an image at all", ("c", 2): b""})
    status, out = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"tfrecord:{tmp_path}/text.tfrecord",
                          "--out", tmp_path / "run")
    assert status == 0, out
    assert "2 records of" in caplog.text and "text.tfrecord#4, " in caplog.text and "text.tfrecord#8" in caplog.text
    png = (folder / "c" / "0.png").read_bytes()
    damaged = {(name, i): png[:40] for name in "abcdef" for i in range(3)}  # PNG signature, then cut
    write_records(tmp_path / "cut.tfrecord", folder, damaged)
    status, out = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"tfrecord:{tmp_path}/cut.tfrecord",
                          "--out", tmp_path / "cut")
    assert status == 2 and "An image of the dataset cannot be decoded" in out and one_line(out), out


def test_a_huge_image_size_is_refused_before_any_work(tmp_path, capsys):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})
    status, out = run_cli(capsys, "train", *FOLDER_FAST, "--dataset", f"folder:{folder}", "--image-size", "100000",
                          "--out", tmp_path / "run")
    assert status == 2 and "--image-size 100000: one batch" in out and one_line(out), out
    assert not (tmp_path / "run").exists()
    assert run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")[0] == 0
    status, out = run_cli(capsys, "evaluate", "--model", tmp_path / "run", "--dataset", f"folder:{folder}",
                          "--image-size", "100000")
    assert status == 2 and "--image-size 100000" in out and one_line(out), out
    status, out = run_cli(capsys, "index", "--model", tmp_path / "run", "--gallery", f"folder:{folder}",
                          "--image-size", "100000", "--out", tmp_path / "index")
    assert status == 2 and "--image-size 100000" in out and one_line(out) and not (tmp_path / "index").exists()


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[128,9000,9000,3]\n"
                                                           "Hint: If you want to see a list of allocated tensors")

    monkeypatch.setattr(runner, "_evaluate", exhausted)
    status, out = run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")
    assert status == 2 and "Out of memory (OOM when allocating" in out and one_line(out), out


# --- 3. index --gallery tfrecord: ---------------------------------------------------------------------------

def test_index_and_search_a_tfrecord_gallery(tmp_path, capsys):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    records = write_records(tmp_path / "six.tfrecord", folder)
    assert run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")[0] == 0
    status, out = run_cli(capsys, "index", "--model", tmp_path / "run", "--gallery", f"tfrecord:{records}",
                          "--out", tmp_path / "index")
    assert status == 0 and "Index of 9 items" in out, out  # the 3 test classes x 3 images, as training splits
    status, out = run_cli(capsys, "search", "--index", tmp_path / "index", folder / "a" / "0.png", "--k", "2")
    assert status == 0 and f"tfrecord:{records}/test/" in out, out


# --- 4. the cache keys see a same-size rewrite with its modification time restored ---------------------------

def test_a_same_size_rewrite_with_the_old_mtime_is_not_taken_from_the_caches(tmp_path):
    from rankloss_tf.datasets import scan_folder
    from rankloss_tf.references import References

    def rewrite(path, content):
        stat = path.stat()
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})
    image = folder / "a" / "1.png"
    assert scan_folder(folder).unreadable == []
    rewrite(image, b"\0" * image.stat().st_size)  # same size and mtime, no longer an image
    assert [path for path, _ in scan_folder(folder).unreadable] == [str(image)]  # the scan cache did not answer
    data = tmp_path / "features.bin"
    data.write_bytes(b"a" * 100_000)
    references = References(np.array([str(data)]), np.array([0]), read=tf.io.read_file)
    before = references.content_key()
    rewrite(data, b"a" * 50_000 + b"b" + b"a" * 49_999)
    assert references.content_key() != before


# --- 5. smaller ---------------------------------------------------------------------------------------------

def test_odd_paths_give_one_line_naming_them(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "run")
    status, out = run_cli(capsys, "train", *FAST, "--out", tmp_path / "dangling")
    assert status == 2 and "symbolic link to a place that does not exist" in out and one_line(out), out
    assert not (tmp_path / "nowhere").exists()
    status, out = run_cli(capsys, "train", *FAST, "--dataset", "folder:", "--out", tmp_path / "run")
    assert status == 2 and "folder: needs the path of a folder" in out and not (tmp_path / "run").exists()
    assert run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")[0] == 0
    (tmp_path / "metrics").mkdir()
    status, out = run_cli(capsys, "evaluate", "--model", tmp_path / "run", "--dataset", "digits", "--json",
                          tmp_path / "metrics")
    assert status == 2 and "--json names a directory" in out and one_line(out), out


def test_a_class_added_is_named_as_such_and_latin_1_names_print_as_escapes(tmp_path, capsys):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcd"})  # P defaults to its 2 classes
    args = ["train", *NO_P, "--dataset", f"folder:{folder}", "--out", tmp_path / "run"]
    assert run_cli(capsys, *args)[0] == 0
    added = os.path.join(os.fsencode(folder), b"caf\xe9")
    os.mkdir(added)
    for number in range(3):
        with open(os.path.join(added, b"%d.png" % number), "wb") as handle:
            handle.write((folder / "a" / f"{number}.png").read_bytes())
    status, out = run_cli(capsys, *args)
    assert status == 2 and "new classes: caf\\xe9" in out and "classes_per_batch" not in out, out
    assert "\\udce9" not in out and one_line(out)


def test_latin_1_names_print_as_escapes_from_the_console(tmp_path):
    command = [sys.executable, "-m", "rankloss_tf.app.cli", "evaluate", "--model",
               os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9")), "--dataset", "digits"]
    done = subprocess.run(command, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2 and b"caf\\xe9" in done.stderr and b"udce9" not in done.stderr, done.stderr


def test_tfrecord_shrinks_p_as_a_folder_does(tmp_path, capsys, caplog):
    folder = make_folder(tmp_path / "photos", {name: 3 for name in "abcdef"})
    records = write_records(tmp_path / "six.tfrecord", folder)
    status, out = run_cli(capsys, "train", *NO_P, "--dataset", f"tfrecord:{records}", "--out", tmp_path / "run")
    assert status == 0 and "has 3 training classes: batches of 3 classes" in caplog.text, out


def test_probes_beyond_the_lists_are_refused_before_embedding(tmp_path, capsys):
    from rankloss_tf.retrieval.ivf_lists import DEFAULT_LISTS

    assert run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")[0] == 0
    index = ["index", "--model", tmp_path / "run", "--gallery", "digits", "--out", tmp_path / "index"]
    for extra, said in ((["--backend", "ivf", "--lists", "4", "--probes", "9"], "--probes 9 exceeds --lists 4"),
                        (["--backend", "ivf", "--probes", "99"], "exceeds the 30 lists of this gallery of "),
                        (["--backend", "ivf", "--probes", "99"], f"(the default lists: {DEFAULT_LISTS}): a query "
                                                                 "probes at most every list; pass --probes 30 or less"),
                        (["--probes", "2"], "apply to --backend ivf")):
        status, out = run_cli(capsys, *index, *extra)
        assert status == 2 and said in out and "Embedding" not in out and one_line(out), out
    assert not (tmp_path / "index").exists()


def test_searching_no_query_gives_empty_results(tmp_path):
    from rankloss_tf.retrieval import Index

    keras.utils.set_random_seed(0)
    exact = Index(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]))
    exact.add(np.zeros((5, 4, 4, 1), np.uint8) + np.arange(5, dtype=np.uint8)[:, None, None, None], np.arange(5))
    ivf = Index(backend="ivf", lists=2)
    ivf.add_embeddings(np.random.default_rng(0).normal(size=(10, 3)), np.arange(10))
    for result in (exact.search(np.zeros((0, 4, 4, 1), np.uint8), k=2),
                   exact.search_embeddings(np.zeros((0, 3)), k=2), ivf.search_embeddings(np.zeros((0, 3)), k=2)):
        assert [np.shape(column) for column in result] == [(0, 2)] * 5


@pytest.mark.parametrize("argv", [["train", "--dataset", "digits", "--out", ""], ["train", "--dataset", "digits",
                                  "--export", " "], ["export", "--model", "", "--out", "e"],
                                  ["index", "--model", "m", "--gallery", "digits", "--out", ""],
                                  ["search", "--index", "", "q.png"], ["evaluate", "--model", ".", "--json", ""]])
def test_an_empty_path_is_refused_not_taken_for_the_current_directory(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    status, out = run_cli(capsys, *argv)
    assert status == 2 and "expected a path. Received: '" in out, out
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []


def test_index_and_export_name_a_read_only_out_before_any_work(tmp_path, capsys, read_only):
    assert run_cli(capsys, "train", *FAST, "--out", tmp_path / "run")[0] == 0
    for argv in (["index", "--model", tmp_path / "run", "--gallery", "digits", "--out", read_only / "index"],
                 ["export", "--model", tmp_path / "run", "--out", read_only / "export"],
                 ["export", "--model", tmp_path / "run", "--format", "onnx", "--out", read_only / "m.onnx"]):
        status, out = run_cli(capsys, *argv)
        assert status == 2 and "--out cannot be written" in out and "Embedding" not in out and one_line(out), out
        assert ".rankloss_tf-tmp" not in out and ".tmp-" not in out
