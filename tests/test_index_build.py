"""`rankloss-tf index` at scale: streamed in blocks, resumed after a kill, split in shards and merged (issue 30)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from rankloss_tf.export import MARKER, export_saved_model
from rankloss_tf.models import build_embedding_model
from rankloss_tf.retrieval import block_files, load_index
from rankloss_tf.retrieval.block_files import BuildWork, work_path
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _folder(root, count, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / f"c{i % 3}" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=16),
                              tmp_path_factory.mktemp("model") / "embedder")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("gallery") / "photos", 21)


@pytest.fixture(scope="module")
def reference(model_dir, photos, tmp_path_factory):
    """The index of an uninterrupted, unsharded build."""
    from rankloss_tf.app import cli

    out = tmp_path_factory.mktemp("reference") / "index"
    assert cli.main([str(a) for a in _argv(model_dir, photos, out)]) == 0
    return load_index(out)


def _argv(model_dir, photos, out, *extra):
    return ["index", "--model", model_dir, "--gallery", f"folder:{photos}", "--out", out, "--block-size", "4",
            "--batch-size", "3", *extra]


def _index(model_dir, photos, out, *extra, capsys):
    return run_cli(capsys, *_argv(model_dir, photos, out, *extra))


def _assert_same_index(got, want):
    assert got.ids.tolist() == want.ids.tolist() and got.labels.tolist() == want.labels.tolist()
    assert got.paths.tolist() == want.paths.tolist()
    np.testing.assert_allclose(got.references, want.references, atol=1e-5)
    queries = want.references[::4] + 0.01
    a, b = got.search_embeddings(queries, k=5), want.search_embeddings(queries, k=5)
    assert (a.ids == b.ids).mean() >= 0.95
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def _kill_after_blocks(monkeypatch, blocks):
    """Stops the build once ``blocks`` block files are written (what a kill at that moment leaves)."""
    write, written = BuildWork.write, []

    def stopping(self, *args):
        if len(written) == blocks:
            raise KeyboardInterrupt
        write(self, *args)
        written.append(args[:2])

    monkeypatch.setattr(BuildWork, "write", stopping)
    return written


def test_a_build_killed_after_two_blocks_resumes_and_equals_an_uninterrupted_one(
        model_dir, photos, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "index"
    _kill_after_blocks(monkeypatch, 2)
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 130 and "finished blocks of embeddings are kept" in run.err, run.err
    assert not out.exists()
    work = work_path(out)
    assert sorted(p.name for p in work.iterdir()) == ["block-0000000000-0000000004.npz",
                                                       "block-0000000004-0000000008.npz", "build.json"]
    monkeypatch.undo()
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 0, run.err
    assert "Resuming: 8 images already embedded" in run.out and "(8 from an earlier run)" in run.err
    assert "images/s" in run.err
    _assert_same_index(load_index(out), reference)
    assert not work.exists()  # our files removed, and the directory with them


def test_a_changed_folder_or_model_is_refused_on_resume_then_restarted(model_dir, photos, tmp_path, capsys,
                                                                        monkeypatch):
    gallery = shutil.copytree(photos, tmp_path / "photos")
    out = tmp_path / "index"
    _kill_after_blocks(monkeypatch, 1)
    assert _index(model_dir, gallery, out, capsys=capsys).status == 130
    monkeypatch.undo()
    _folder(tmp_path / "new", 1, seed=5)
    shutil.copy(tmp_path / "new" / "c0" / "000.png", gallery / "c1" / "added.png")
    run = _index(model_dir, gallery, out, capsys=capsys)
    assert run.status == 2 and "the gallery changed" in run.err and "--restart" in run.err, run.err
    assert len(run.err.strip().splitlines()) == 1
    assert (work_path(out) / "block-0000000000-0000000004.npz").is_file()  # refused: nothing discarded
    other = export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=8), tmp_path / "other")
    run = _index(other, gallery, out, capsys=capsys)
    assert run.status == 2 and "the model changed" in run.err, run.err
    run = _index(model_dir, gallery, out, "--restart", capsys=capsys)
    assert run.status == 0 and "Resuming" not in run.out, run.err
    assert len(load_index(out)) == 22 and not work_path(out).exists()


def test_a_work_directory_not_of_a_build_is_never_touched(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "index"
    mine = work_path(out)
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 2 and "is not the work directory of an index build" in run.err
    assert (mine / "notes.txt").read_text() == "mine" and not out.exists()


def test_files_put_in_the_work_directory_are_kept(model_dir, photos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "index"
    _kill_after_blocks(monkeypatch, 1)
    assert _index(model_dir, photos, out, capsys=capsys).status == 130
    monkeypatch.undo()
    (work_path(out) / "notes.txt").write_text("mine")
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 0 and "holds files this build did not write" in run.out
    assert sorted(p.name for p in work_path(out).iterdir()) == ["notes.txt"]


def _kill_before_cleanup(monkeypatch):
    """Stops the build once --out is written, before its work files are removed (a kill at that moment)."""
    def stopping(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(BuildWork, "remove", stopping)


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


def test_a_build_killed_after_writing_its_index_is_finished_by_the_same_command(model_dir, photos, tmp_path, capsys,
                                                                                monkeypatch):
    out = tmp_path / "index"
    _kill_before_cleanup(monkeypatch)
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 130 and "interrupted after" in run.err and "run the same command again" in run.err, run.err
    monkeypatch.undo()
    written, work = _files(out), work_path(out)
    assert len(list(work.glob("block-*.npz"))) == 6 and (work / "build.json").is_file()
    (work / "notes.txt").write_text("mine")
    for extra, change in ((["--block-size", "5"], "--block-size: 4 -> 5"),
                          (["--metric", "l2"], "--metric: cosine -> l2"),
                          (["--backend", "ivf"], "--backend: exact -> ivf"),
                          (["--backend", "ivf", "--lists", "2"], "--backend: exact -> ivf; --lists: default -> 2")):
        run = _index(model_dir, photos, out, *extra, capsys=capsys)  # another build: refused, naming what differs
        assert run.status == 2 and f"holds the index of another build ({change})" in run.err, run.err
        assert "--overwrite" in run.err and len(run.err.strip().splitlines()) == 1
    other = export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=8), tmp_path / "other")
    run = _index(other, photos, out, capsys=capsys)
    assert run.status == 2 and "holds the index of another build (the model changed" in run.err, run.err
    assert _files(out) == written and len(list(work.glob("block-*.npz"))) == 6
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 0 and "already holds the index this command builds" in run.out, run.err
    assert len(run.out.strip().splitlines()) == 1 and "Embedding" not in run.out
    assert _files(out) == written  # the index unchanged: no new version
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]  # only the files the build wrote removed
    run = _index(model_dir, photos, out, capsys=capsys)  # done: an existing index is refused as before
    assert run.status == 2 and "already exists" in run.err


def test_another_builds_index_options_are_named_with_their_recorded_and_new_values(model_dir, photos, tmp_path, capsys,
                                                                                   monkeypatch):
    out = tmp_path / "index"
    _kill_before_cleanup(monkeypatch)
    assert _index(model_dir, photos, out, "--backend", "ivf", "--lists", "2", capsys=capsys).status == 130
    monkeypatch.undo()
    run = _index(model_dir, photos, out, "--backend", "ivf", "--lists", "3", capsys=capsys)
    assert run.status == 2 and "holds the index of another build (--lists: 2 -> 3); it is replaced only" in run.err
    run = _index(model_dir, photos, out, "--backend", "ivf", "--lists", "2", "--probes", "2", "--codes", "int8",
                 capsys=capsys)
    assert run.status == 2 and "(--probes: default -> 2; --codes: default -> int8)" in run.err, run.err
    run = _index(model_dir, photos, out, "--backend", "ivf", "--lists", "2", capsys=capsys)
    assert run.status == 0 and "already holds the index this command builds" in run.out, run.err


def test_an_interrupted_builds_changed_options_are_named_with_their_values(model_dir, photos, tmp_path, capsys,
                                                                          monkeypatch):
    out = tmp_path / "index"
    _kill_after_blocks(monkeypatch, 1)
    assert _index(model_dir, photos, out, capsys=capsys).status == 130
    monkeypatch.undo()
    run = _index(model_dir, photos, out, "--block-size", "5", "--image-size", "8", capsys=capsys)
    assert run.status == 2 and "embedded other items: the gallery changed (its key holds --image-size; or a file was added, removed, " \
        "renamed or rewritten); --image-size: default -> 8; --block-size: 4 -> 5. " in run.err, \
        run.err
    manifest = work_path(out) / "build.json"
    recorded = json.loads(manifest.read_text())
    del recorded["block_size"]  # a work folder of a version that did not record the field: the sentence as before
    manifest.write_text(json.dumps(recorded))
    run = _index(model_dir, photos, out, "--block-size", "5", capsys=capsys)
    assert run.status == 2 and "embedded other items: --block-size changed. " in run.err, run.err


def test_a_shard_killed_after_writing_it_is_finished_by_the_same_command(model_dir, photos, tmp_path, capsys,
                                                                         monkeypatch):
    out = tmp_path / "shard"
    _kill_before_cleanup(monkeypatch)
    assert _index(model_dir, photos, out, "--shard", "0/2", capsys=capsys).status == 130
    monkeypatch.undo()
    written = _files(out)
    run = _index(model_dir, photos, out, "--shard", "1/2", capsys=capsys)
    assert run.status == 2 and "holds the shard of another build (the items to embed changed (gallery size or " \
        "--shard): items 0-10 -> 10-21)" in run.err, run.err
    run = _index(model_dir, photos, out, "--shard", "0/2", capsys=capsys)
    assert run.status == 0 and "already holds the shard this command builds" in run.out, run.err
    assert _files(out) == written and not work_path(out).exists()


def _shards(model_dir, photos, tmp_path, count, capsys, model=None, only=None):
    paths = []
    for i in range(count) if only is None else [only]:
        paths.append(tmp_path / f"shard{i}of{count}")
        run = _index(model or model_dir, photos, paths[-1], "--shard", f"{i}/{count}", capsys=capsys)
        assert run.status == 0, run.err
        assert json.loads((paths[-1] / MARKER).read_text())["kind"] == block_files.SHARD_KIND
        assert not work_path(paths[-1]).exists()
    return paths


def _merge(model_dir, shards, out, capsys, *extra):
    return run_cli(capsys, "index", "--model", model_dir, "--merge", *shards, "--out", out, *extra)


def test_shards_merged_equal_the_unsharded_build(model_dir, photos, reference, tmp_path, capsys):
    shards = _shards(model_dir, photos, tmp_path, 3, capsys)
    run = _merge(model_dir, shards[::-1], tmp_path / "merged", capsys)  # any order
    assert run.status == 0 and "Index of 21 items" in run.out, run.err
    _assert_same_index(load_index(tmp_path / "merged"), reference)


def test_merge_refuses_shards_that_are_not_one_build(model_dir, photos, tmp_path, capsys):
    three = _shards(model_dir, photos, tmp_path, 3, capsys)
    two = _shards(model_dir, photos, tmp_path, 2, capsys, only=1)
    other = export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=8), tmp_path / "other")
    other_shard = _shards(model_dir, photos, tmp_path / "o", 3, capsys, model=other, only=1)[0]
    twin = shutil.copytree(three[0], tmp_path / "twin")
    info = json.loads((twin / MARKER).read_text())
    (twin / MARKER).write_text(json.dumps({**info, "shard": 1}))  # shard 0's items under another number
    out = tmp_path / "merged"
    cases = [
        ([three[0], three[2]], "Shard(s) 1/3 missing"),
        ([three[0], three[1], three[1], three[2]], "given more than once"),
        ([three[0], two[0]], "different shard counts"),
        ([three[0], other_shard, three[2]], "different models"),
        ([three[0], twin, three[2]], "Item ids must be unique across the shards"),
        ([three[0], tmp_path / "none"], "does not exist"),
        ([three[0], photos], "is not a shard"),
    ]
    for shards, message in cases:
        run = _merge(model_dir, shards, out, capsys)
        assert run.status == 2 and message in run.err and len(run.err.strip().splitlines()) == 1, (message, run.err)
    run = _merge(other, three, out, capsys)
    assert run.status == 2 and "another model than --model" in run.err
    assert not out.exists()


def test_bad_build_arguments_exit_2_before_any_work(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "index"
    cases = [
        (["--model", model_dir], "index takes --gallery"),
        (["--model", model_dir, "--gallery", f"folder:{photos}", "--merge", tmp_path], "one of the two"),
        (["--model", model_dir, "--gallery", f"folder:{photos}", "--shard", "0/2", "--backend", "ivf"],
         "apply when the shards are merged"),
        (["--model", model_dir, "--gallery", f"folder:{photos}", "--shard", "2/2"], "0 <= i < N"),
        (["--model", model_dir, "--gallery", f"folder:{photos}", "--shard", "x"], "expected i/N"),
        (["--model", model_dir, "--gallery", f"folder:{photos}", "--shard", "0/30"], "holds no item"),
    ]
    for argv, message in cases:
        run = run_cli(capsys, "index", *argv, "--out", out)
        assert run.status == 2 and message in run.err, (argv, run.err)
        assert "Embedding" not in run.out
    assert not out.exists() and not work_path(out).exists()


def test_progress_reports_images_per_second_and_time_left():
    import io

    from rankloss_tf.app.index_commands import _Progress

    stream = io.StringIO()
    progress = _Progress("embedding", stream)
    progress.started -= 10.0  # ten seconds ago
    progress.shown -= 60.0
    progress(50, 200, resumed=0)
    progress(200, 200, resumed=0)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("embedding: 50/200 images, 5 images/s, 30s left"), lines
    assert lines[-1].startswith("embedding: 200/200 images") and "left" not in lines[-1]


@pytest.mark.slow
def test_a_sigkilled_console_build_resumes_from_its_finished_blocks(model_dir, tmp_path, capsys):
    """A real kill: SIGKILL once the first block file is on disk, then the same command again."""
    photos = _folder(tmp_path / "photos", 60)
    out = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [sys.executable, "-m", "rankloss_tf.app.cli", "index", "--model", str(model_dir), "--gallery",
            f"folder:{photos}", "--out", str(out), "--block-size", "4", "--batch-size", "1"]
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = work_path(out) / "block-0000000000-0000000004.npz"
    deadline = time.monotonic() + 240
    while not first.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert first.exists() and not out.exists()
    done = BuildWork(work_path(out), json.loads((work_path(out) / "build.json").read_text()))
    finished = len(done.blocks()) - len(done.missing())
    assert 1 <= finished < len(done.blocks())
    run = _index(model_dir, photos, out, capsys=capsys)
    assert run.status == 0 and f"Resuming: {4 * finished} images" in run.out, run.out + run.err
    whole = tmp_path / "whole"
    assert _index(model_dir, photos, whole, capsys=capsys).status == 0
    _assert_same_index(load_index(out), load_index(whole))


def test_a_named_dataset_resumes_from_its_blocks_with_its_labels(tmp_path, capsys, monkeypatch):
    """A gallery without files of its own (digits) is read range by range too (skip / take)."""
    from rankloss_tf import datasets

    keras.utils.set_random_seed(0)
    model = export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=4), tmp_path / "model")
    argv = ["index", "--model", model, "--gallery", "digits", "--block-size", "300", "--out"]
    _kill_after_blocks(monkeypatch, 1)
    assert run_cli(capsys, *argv, tmp_path / "index").status == 130
    monkeypatch.undo()
    run = run_cli(capsys, *argv, tmp_path / "index")
    assert run.status == 0 and "Resuming: 300 images" in run.out, run.err
    index = load_index(tmp_path / "index")
    want = np.concatenate([labels.numpy() for _, labels in datasets.load("digits", "test").batch(1000)])
    assert index.labels.tolist() == want.tolist() and index.ids[300] == "digits/test/000300"
    assert run_cli(capsys, *argv[:-3], "--out", tmp_path / "whole").status == 0
    _assert_same_index(index, load_index(tmp_path / "whole"))
