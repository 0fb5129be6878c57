"""Index directories: versions behind an atomic pointer, readers never see a mix, damaged files, odd labels."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.export import MARKER
from rankloss_tf.retrieval import Index, load_index, save_index
from rankloss_tf.retrieval.versions import current_version

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def small_index(version, metric=None):
    """Index ``version``: cosine for even versions, l2 for odd, ``3 + version`` items with ids ``v<version>-<i>``."""
    n = 3 + version
    index = Index(metric=metric or ("cosine" if version % 2 == 0 else "l2"))
    rng = np.random.default_rng(version)
    index.add_embeddings(rng.normal(size=(n, 4)) + 0.1, labels=np.full(n, version), ids=[f"v{version}-{i}" for i in range(n)])
    return index


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_retrieval_versions import small_index
from rankloss_tf.retrieval import save_index
for version in range(1, {saves} + 1):
    save_index(small_index(version), {path!r}, overwrite=True)
Path({done!r}).write_text("done")
"""

READER = """
import json, sys
from pathlib import Path
import numpy as np
from rankloss_tf.retrieval import load_index
seen, loads = set(), 0
while loads < {max_loads} and (loads < 3 or not Path({done!r}).exists()):
    index = load_index({path!r})  # any failure ends this process with a traceback
    version = int(index.ids[0].split("-")[0][1:])
    assert all(i.startswith(f"v{{version}}-") for i in index.ids), index.ids
    assert len(index) == 3 + version and (index.labels == version).all(), (version, len(index))
    assert index.metric == ("cosine" if version % 2 == 0 else "l2"), (version, index.metric)
    assert index.search_embeddings(np.ones((1, 4)), k=2).ids[0, 0].startswith(f"v{{version}}-")
    seen.add(version)
    loads += 1
print(json.dumps({{"loads": loads, "versions": sorted(seen)}}))
"""


@pytest.mark.slow  # two TensorFlow processes (~40-70 s on 2 shared cores): the only test of concurrent readers
def test_a_reader_gets_the_old_or_the_new_index_while_another_process_saves(tmp_path):
    path, done = tmp_path / "index", tmp_path / "writer.done"
    save_index(small_index(0), path)
    tests = os.path.dirname(__file__)
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(tests=tests, saves=8, path=str(path), done=str(done))],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = subprocess.run([sys.executable, "-c", READER.format(max_loads=150, path=str(path), done=str(done))],
                            env=ENV, capture_output=True, text=True, timeout=600)
    _, writer_err = writer.communicate(timeout=600)
    assert writer.returncode == 0, writer_err[-2000:]
    assert reader.returncode == 0, reader.stderr[-3000:]
    report = json.loads(reader.stdout.strip().splitlines()[-1])
    assert report["loads"] >= 3, report
    # The current and the previous version are kept; older ones removed; the pointer names the last save.
    assert sorted(p.name for p in path.iterdir()) == ["8", "9", MARKER]
    assert current_version(path) == path / "9" and len(load_index(path)) == 3 + 8


def test_versions_plain_tensorflow_and_what_is_never_deleted(tmp_path):
    path = tmp_path / "index"
    first = save_index(small_index(2), path)
    assert first == path / "1" and json.loads((path / MARKER).read_text())["current"] == "1"
    (path / "notes.txt").write_text("mine")
    (path / "7").mkdir()  # a numbered folder that is not ours
    (path / ".rankloss_tf-tmp-999999999-0a1b2c3d-version").mkdir()  # left by a killed save (no such process): removed
    (path / ".tmp-mine").mkdir()  # a name we do not own: kept
    for version in (3, 4, 5):
        latest = save_index(small_index(version), path, overwrite=True)
    assert latest == path / "10"  # numbers only grow, past any numbered entry (TF Serving serves the highest)
    assert {p.name for p in path.iterdir()} == {".tmp-mine", "7", "9", "10", MARKER, "notes.txt"}
    served = tf.saved_model.load(str(latest))  # plain TensorFlow loads one version
    found = served.search_embeddings(embeddings=tf.ones([1, 4]), k=tf.constant(1))
    assert found["ids"].numpy()[0, 0].decode().startswith("v5-")
    assert len(load_index(latest)) == 8  # a version directory loads too
    with pytest.raises(ValueError, match="one SavedModel"):
        save_index(small_index(6), latest, overwrite=True)
    with pytest.raises(ValueError, match="already exists"):
        save_index(small_index(6), path)


def _damage(path, how):
    version = current_version(path)
    if how == "truncated variables":
        data = next((version / "variables").glob("variables.data-*"))
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    elif how == "garbage graph":
        (version / "saved_model.pb").write_bytes(b"\x08\xff garbage" * 10)
    elif how == "missing variables":
        for file in (version / "variables").iterdir():
            file.unlink()
    elif how == "missing version":
        for file in sorted(version.rglob("*"), reverse=True):
            file.rmdir() if file.is_dir() else file.unlink()
        version.rmdir()
    elif how == "bad pointer":
        (path / MARKER).write_text(json.dumps({"format": "rankloss_tf", "kind": "index", "current": "../x"}))


@pytest.mark.parametrize("how", ["truncated variables", "garbage graph", "missing variables", "missing version",
                                 "bad pointer"])
def test_damaged_index_files_give_one_clear_value_error(tmp_path, how):
    path = tmp_path / "index"
    save_index(small_index(1), path)
    _damage(path, how)
    with pytest.raises(ValueError, match=r"damaged|no version") as error:
        load_index(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_labels_outside_int64_are_refused_never_wrapped():
    index = Index()
    with pytest.raises(ValueError, match="fit in int64"):
        index.add_embeddings(np.eye(2), labels=np.array([1, 2**63], np.uint64))
    index.add_embeddings(np.eye(2), labels=np.array([1, 2**63 - 1], np.uint64))
    assert index.labels.tolist() == [1, 2**63 - 1]
    with pytest.raises(ValueError, match="integers"):
        index.add_embeddings(np.eye(2), labels=np.array([1, 2**64], object))


def test_undecodable_file_names_round_trip(tmp_path):
    index = small_index(0)
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name, as os.listdir gives it
    index.add_embeddings(np.ones((1, 4)), labels=[9], ids=[name], paths=[f"/photos/{name}"])
    path = save_index(index, tmp_path / "index")
    loaded = load_index(tmp_path / "index")
    assert loaded.ids[-1] == name and loaded.paths[-1] == f"/photos/{name}"
    loaded_graph = tf.saved_model.load(str(path))
    served = loaded_graph.search_embeddings(embeddings=tf.ones([1, 4]), k=tf.constant(1))
    assert served["paths"].numpy()[0, 0] == b"/photos/caf\xe9.png"  # the file's own bytes


def test_a_full_disk_leaves_the_previous_index_and_says_so_in_one_line(tmp_path, monkeypatch):
    from rankloss_tf.retrieval import versions

    path = tmp_path / "index"
    save_index(small_index(1), path)

    def full(directory, write, info):
        os.makedirs(directory, exist_ok=True)
        (Path(directory) / "partial").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(versions, "_write_version", full)
    for target, overwrite in ((path, True), (tmp_path / "new", False)):
        with pytest.raises(ValueError, match="No space left on device.*unchanged") as error:
            save_index(small_index(2), target, overwrite=overwrite)
        assert "\n" not in str(error.value)
    assert not (tmp_path / "new").exists() and sorted(p.name for p in path.iterdir()) == ["1", MARKER]
    assert len(load_index(path)) == 4
