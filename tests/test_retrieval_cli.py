"""`rankloss-tf index` and `rankloss-tf search`: a gallery into one SavedModel, ranked answers, safe paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import datasets
from rankloss_tf.app import cli
from rankloss_tf.export import MARKER, export_saved_model
from rankloss_tf.loading import load_model
from rankloss_tf.models import build_embedding_model
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=16),
                              tmp_path_factory.mktemp("model") / "embedder")


def test_index_then_search_prints_ranked_ids_and_scores(model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    status, stdout, err = run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", out,
                                  "--batch-size", "400")
    assert status == 0
    assert "embedding: 896/896 images" in err and "images/s" in err  # progress on stderr, stdout kept for results
    assert "Index of 896 items" in stdout
    assert json.loads((out / MARKER).read_text())["kind"] == "index" and (out / "1" / "saved_model.pb").is_file()

    image, _ = next(iter(datasets.load("digits", "test").skip(5)))
    query = tmp_path / "query.png"
    query.write_bytes(tf.io.encode_png(tf.image.resize(image, (24, 24), "nearest")).numpy())  # another size
    status, stdout, _ = run_cli(capsys, "search", "--index", out, query, "--k", "3")
    assert status == 0
    lines = stdout.splitlines()
    assert lines[0] == f"{query}:" and "similarity" in lines[1]
    ranks = [line.split() for line in lines[2:]]
    assert [r[0] for r in ranks] == ["1", "2", "3"]
    scores = [float(r[1]) for r in ranks]
    assert scores == sorted(scores, reverse=True)
    assert all(r[3].startswith("digits/test/") for r in ranks)


def test_index_refuses_unsafe_outputs_before_any_work(model_dir, tmp_path, capsys):
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "keep.txt").write_text("keep")
    status, _, err = run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", user_dir,
                             "--overwrite")
    assert status == 2 and "not an export of rankloss_tf" in err
    assert (user_dir / "keep.txt").read_text() == "keep"
    status, _, err = run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", model_dir,
                             "--overwrite")
    assert status == 2 and "equal to, inside or above" in err
    status, _, err = run_cli(capsys, "search", "--index", user_dir, tmp_path / "none.png")
    assert status == 2 and "Not an index" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "index,search" in capsys.readouterr().out
    parser = cli.build_parser()
    args = parser.parse_args(["search", "--index", "x", "a.png", "b.png", "--k", "2"])
    assert args.images == ["a.png", "b.png"] and args.k == 2 and args.func.__name__ == "run_search"
    assert np.all(parser.parse_args(["index", "--model", "m", "--gallery", "g", "--out", "o"]).batch_size == 256)


CONSOLE = Path(sys.executable).with_name("rankloss-tf")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def console(*argv, timeout=300):
    """The installed console script, as a user runs it (its own registration, no test imports)."""
    done = subprocess.run([str(CONSOLE), *map(str, argv)], capture_output=True, text=True, env=ENV, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def model_forms(tmp_path_factory):
    """The three forms of a trained model: a run directory (its model.keras), a .keras file, a SavedModel."""
    root = tmp_path_factory.mktemp("forms")
    keras.utils.set_random_seed(0)
    model = build_embedding_model((8, 8, 1), embedding_dim=8)  # holds the package's ImagePreprocessing layer
    (root / "run").mkdir()
    model.save(root / "run" / "model.keras")
    model.save(root / "model.keras")
    export_saved_model(model, root / "saved_model")
    return {"run": root / "run", "keras": root / "model.keras", "saved_model": root / "saved_model"}


@pytest.mark.slow  # nine console-script processes (~10 s each on 2 shared cores): the documented commands per form
@pytest.mark.parametrize("form", ["run", "keras", "saved_model"])
def test_every_command_on_every_model_form_via_the_console_script(model_forms, form, tmp_path):
    model = model_forms[form]
    out = tmp_path / "index"
    status, stdout, stderr = console("index", "--model", model, "--gallery", "digits", "--out", out)
    assert status == 0, stderr[-2000:]
    assert "Index of 896 items" in stdout and "Traceback" not in stderr
    image, _ = next(iter(datasets.load("digits", "test")))
    query = tmp_path / "query.png"
    query.write_bytes(tf.io.encode_png(image).numpy())
    status, stdout, stderr = console("search", "--index", out, query, "--k", "2")
    assert status == 0, stderr[-2000:]
    assert stdout.splitlines()[2].split()[3] == "digits/test/000000"  # the query itself first
    status, stdout, stderr = console("evaluate", "--model", model, "--dataset", "digits", "--no-clustering")
    assert status == 0, stderr[-2000:]
    assert "recall@1" in stdout


def test_loader_registers_the_keras_objects_itself(model_forms):
    script = ("import sys, keras; from rankloss_tf.loading import load_model; import rankloss_tf\n"
              "assert 'rankloss_tf>ImagePreprocessing' not in keras.saving.get_custom_objects()  # import: no state\n"
              "print(type(load_model(sys.argv[1])).__name__, type(load_model(sys.argv[2])).__name__)")
    done = subprocess.run([sys.executable, "-c", script, model_forms["run"], model_forms["keras"]],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["Functional", "Functional"]
    with pytest.raises(ValueError, match="must be a SavedModel directory, a .keras file or a training run"):
        load_model(model_forms["run"].parent / "nothing")
    for content in (b"", b"not a zip"):
        broken = model_forms["run"].parent / "broken.keras"
        broken.write_bytes(content)
        with pytest.raises(ValueError, match="not a .keras zip archive.*broken.keras"):
            load_model(broken)
    damaged = model_forms["run"].parent / "damaged"
    damaged.mkdir(exist_ok=True)
    (damaged / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Cannot read the model.*damaged"):
        load_model(damaged)


def _png(path, shape, mode=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(os.fsencode(path), format="PNG")


def test_folder_gallery_uses_the_training_scanner(model_dir, tmp_path, capsys):
    root = tmp_path / "photos"
    for name in ("cats", "dogs"):
        for i in range(3):
            _png(root / name / f"{i}.png", (10, 10, 3))
    _png(root / ".git" / "objects" / "x.png", (10, 10, 3))  # hidden: not a class
    _png(root / "cats" / ".ipynb_checkpoints" / "0-checkpoint.png", (10, 10, 3))  # hidden: not an image
    (root / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "dogs" / "folder.png").mkdir()  # a directory named like an image
    (root / "dogs" / "gone.png").symlink_to(tmp_path / "missing.png")  # a broken link
    (root / "dogs" / "scan.tiff").write_bytes(b"II*\x00")  # a format TensorFlow does not read
    _png(root / "dogs" / os.fsdecode(b"caf\xe9.png"), (10, 10, 3))  # a Latin-1 name: read like any other
    out = tmp_path / "index"
    status, stdout, err = run_cli(capsys, "index", "--model", model_dir, "--gallery", f"folder:{root}", "--out", out)
    assert status == 0, err
    assert "Skipped 4 files" in stdout and "scan.tiff" in stdout and "gone.png" in stdout and "folder.png" in stdout
    assert "broken.jpg" in stdout
    from rankloss_tf.retrieval import load_index

    index = load_index(out)
    assert sorted(set(index.labels.tolist())) == [0, 1] and len(index) == 7
    scan = datasets.scan_folder(root)  # the labels training gives
    for item, label in zip(index.ids, index.labels):
        assert item.split("/")[0] == scan.classes[label]
    assert os.fsdecode(b"dogs/caf\xe9.png") in index.ids.tolist()


def test_search_reads_every_image_training_reads(model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    assert run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", out)[0] == 0
    queries = []
    for mode, shape in (("LA", (12, 9, 2)), ("L", (12, 9)), ("RGBA", (5, 7, 4)), ("RGB", (30, 30, 3))):
        queries.append(tmp_path / f"query {mode}.png")
        _png(queries[-1], shape, mode)
    queries.append(tmp_path / os.fsdecode(b"caf\xe9.png"))
    _png(queries[-1], (8, 8, 3))
    status, stdout, err = run_cli(capsys, "search", "--index", out, *queries, "--k", "1")
    assert status == 0, err
    assert stdout.count("rank") == 5 and "caf\\xe9.png:" in stdout


def test_index_checks_every_argument_before_any_work(model_dir, tmp_path, capsys):
    cases = [
        (["--model", tmp_path / "none", "--gallery", "digits"], "Received: " + str(tmp_path / "none")),
        (["--model", model_dir, "--gallery", f"folder:{tmp_path / 'none'}"], "gallery folder does not exist"),
        (["--model", model_dir, "--gallery", "nope"], "Received: --gallery=nope"),
        (["--model", model_dir, "--gallery", "digits", "--data-dir", tmp_path / "none"], "--data-dir="),
    ]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "saved_model.pb").write_bytes(b"garbage")
    cases.append((["--model", damaged, "--gallery", "digits"], "Cannot read the model"))
    for argv, message in cases:
        status, out, err = run_cli(capsys, "index", *argv, "--out", tmp_path / "index")
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert "Embedding" not in out
    assert not (tmp_path / "index").exists()
    # An --out that is a model export (one SavedModel, not an index directory): refused before embedding,
    # also with --overwrite (it was found only after the gallery was embedded).
    import shutil

    other = shutil.copytree(model_dir, tmp_path / "another_export")
    status, out, err = run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", other,
                               "--overwrite")
    assert status == 2 and "--out is one SavedModel" in err and "Embedding" not in out, (out, err)


def test_ctrl_c_during_index_exits_130_with_an_index_message(model_dir, tmp_path, capsys, monkeypatch):
    from rankloss_tf.retrieval import build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "embed_blocks", interrupted)
    status, _, err = run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", tmp_path / "x")
    assert status == 130 and "rankloss-tf index: interrupted; nothing was written" in err
    assert "epochs" not in err and not (tmp_path / "x").exists()
    from rankloss_tf.retrieval import saved_model

    monkeypatch.setattr(saved_model, "load_index", interrupted)
    status, _, err = run_cli(capsys, "search", "--index", tmp_path / "x", tmp_path / "q.png")
    assert status == 130 and "rankloss-tf search: interrupted" in err and "epochs" not in err


def test_search_on_a_damaged_index_exits_2_with_one_line(model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    assert run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", out)[0] == 0
    (out / "1" / "saved_model.pb").write_bytes(b"garbage")
    query = tmp_path / "q.png"
    _png(query, (8, 8, 3))
    status, _, err = run_cli(capsys, "search", "--index", out, query)
    assert status == 2 and "damaged" in err and len(err.strip().splitlines()) == 1


def test_help_imports_no_tensorflow():
    script = ("import sys, contextlib, io\nfrom rankloss_tf.app import cli\n"
              "for argv in (['--help'], ['index', '--help'], ['search', '--help']):\n"
              "    with contextlib.redirect_stdout(io.StringIO()):\n"
              "        try:\n            cli.main(argv)\n        except SystemExit:\n            pass\n"
              "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
