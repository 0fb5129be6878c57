"""`rankloss-tf index` and `rankloss-tf search`: a gallery into one SavedModel, ranked answers, safe paths."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import cli, datasets
from rankloss_tf.export import MARKER, export_saved_model
from rankloss_tf.models import build_embedding_model


def run_cli(capsys, *argv):
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return export_saved_model(build_embedding_model((8, 8, 1), embedding_dim=16),
                              tmp_path_factory.mktemp("model") / "embedder")


def test_index_then_search_prints_ranked_ids_and_scores(model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    status, stdout, _ = run_cli(capsys, "index", "--model", model_dir, "--gallery", "digits", "--out", out,
                                "--batch-size", "400")
    assert status == 0
    assert "embedding: batch 1/3" in stdout and "embedding: batch 3/3" in stdout  # a line per step off a terminal
    assert "Index of 896 items" in stdout
    assert json.loads((out / MARKER).read_text())["kind"] == "index"

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
