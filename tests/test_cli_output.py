"""What the ``rankloss-tf`` command prints: no TensorFlow start-up noise, help that tells the truth,
no claim of plots that were not drawn, no Keras shuffle warning."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankloss_tf.app import cli

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "cpu_feature_guard", "cuInit")


def clean_env(**extra):
    """The environment of a user's shell: this checkout importable, no TF_CPP_MIN_LOG_LEVEL of the tests'."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RANKLOSS_TF_SMOKE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


def help_text(capsys, *argv):
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796563318.134924    8252 port.cc:153] oneDNN custom operations are on. You may see ...",
    "I0000 00:00:1796563318.135218    8252 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    "E0000 00:00:1796563318.135218    8252 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796563347.448926    8861 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow ...",
])
def test_startup_notices_are_recognised(line):
    assert cli.STARTUP_NOISE.search(line)


@pytest.mark.parametrize("line", [
    "E0000 00:00:1796563318.135218    8252 saved_model_loader.cc:12] real trouble",
    "Traceback (most recent call last):",
    "ImportError: libcudnn.so.9: cannot open shared object file",
])
def test_other_lines_are_kept(line):
    assert not cli.STARTUP_NOISE.search(line)


def test_tensorflow_loads_quietly_and_other_stderr_stays():
    # argv[0] "-m": the package skips its Keras registrations as under `python -m rankloss_tf.app.cli`.
    code = ("import sys; sys.argv[0] = '-m'; from rankloss_tf.app import cli; "
            "assert 'tensorflow' not in sys.modules; cli._quiet_tensorflow(); "
            "import tensorflow as tf; tf.constant(1.0) + 1; sys.stderr.write('still here\\n')")
    quiet = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert not [word for word in NOISE if word in quiet.stderr], quiet.stderr
    assert "still here" in quiet.stderr


def test_help_of_a_required_dataset_shows_no_default(capsys):
    assert "(default: omniglot)" not in help_text(capsys, "train")
    assert "(default: omniglot)" not in help_text(capsys, "evaluate")


def test_evaluate_split_has_help(capsys):
    assert "--split {test,train} score the held-out test classes" in help_text(capsys, "evaluate")


def test_smoke_knob_shortens_training(monkeypatch):
    config = cli.TrainConfig(dataset="digits", epochs=30)
    assert cli._smoke(config) is config
    monkeypatch.setenv(cli.SMOKE_ENV, "1")
    assert (cli._smoke(config).epochs, cli._smoke(config).steps_per_epoch) == (1, 2)


def test_train_without_matplotlib_names_no_plots_and_prints_no_noise(tmp_path):
    """A smoke run through the console script, matplotlib hidden: the plots are skipped, not claimed."""
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    env = clean_env(RANKLOSS_TF_SMOKE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), env["PYTHONPATH"]])
    result = subprocess.run([sys.executable, "-m", "rankloss_tf.app.cli", "train", "--dataset", "digits",
                             "--out", str(tmp_path / "run"), "--embedding-dim", "8"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Plots skipped" in result.stderr
    assert "Written to" in result.stdout and "plots/" not in result.stdout
    assert not [word for word in NOISE if word in result.stderr], result.stderr[-3000:]
    assert "`shuffle=True` was passed" not in result.stderr


@pytest.mark.parametrize("delay", [0.8, 2.5])
def test_ctrl_c_while_tensorflow_loads_exits_130_with_one_line(tmp_path, delay):
    # SIGINT inside TensorFlow's import printed a KeyboardInterrupt traceback, or at ~1 s an unrelated
    # ImportError with exit 1; held until the import is done, it is exit 130 and one line.
    import signal
    import time

    command = [sys.executable, "-m", "rankloss_tf.app.cli", "train", "--dataset", "digits", "--epochs", "50",
               "--out", str(tmp_path / "out"), "--no-plots"]
    process = subprocess.Popen(command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err and "Error" not in err.replace("error:", ""), err[-2000:]
    assert process.returncode == 130, (process.returncode, err[-2000:])
    assert "interrupted" in err
