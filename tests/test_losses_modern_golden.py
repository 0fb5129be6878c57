"""The issue-31 losses equal pytorch-metric-learning 2.9 (values and gradients) on the committed batches.

tests/fixtures/pml/modern.json was written by benchmarks/make_pml_fixtures.py in the
pinned PML environment (benchmarks/envs.py); each case holds its inputs, PML's loss with
its default reducer and PML's gradients.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf import ops

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pml" / "modern.json"
CASES = json.loads(FIXTURE.read_text())["cases"]
PAIR_KERNELS = {"multi_similarity": ops.multi_similarity_loss, "supcon": ops.supcon_loss, "ntxent": ops.ntxent_loss}
CLASS_KERNELS = {"proxy_anchor": ops.proxy_anchor_loss, "proxy_nca": ops.proxy_nca_loss, "arcface": ops.arcface_loss,
                 "cosface": ops.cosface_loss}


def _id(case):
    options = ",".join(f"{k}={v}" for k, v in case["options"].items())
    shape = np.shape(case.get("weights", []))
    return f"{case['loss']}[{options}]-{case['batch']}" + (f"-w{len(shape)}d" if "weights" in case else "")


def _close(actual, expected, rtol=2e-5, atol=2e-5):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def test_fixture_was_made_by_pml_2_9():
    meta = json.loads(FIXTURE.read_text())["meta"]
    assert meta["pytorch_metric_learning"] == "2.9.0" and meta["script"] == "benchmarks/make_pml_fixtures.py"
    assert {case["loss"] for case in CASES} == set(PAIR_KERNELS) | set(CLASS_KERNELS)


@pytest.mark.parametrize("case", [c for c in CASES if c["loss"] in PAIR_KERNELS], ids=_id)
def test_pair_losses_equal_pml(case):
    embeddings = tf.constant(case["embeddings"], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        value = tf.reduce_mean(PAIR_KERNELS[case["loss"]](case["labels"], embeddings, **case["options"]))
    _close(float(value), case["value"])
    _close(tape.gradient(value, embeddings).numpy(), np.array(case["grad"]), atol=1e-4)


@pytest.mark.parametrize("case", [c for c in CASES if c["loss"] in CLASS_KERNELS], ids=_id)
def test_class_losses_equal_pml(case):
    embeddings = tf.constant(case["embeddings"], tf.float32)
    weights = tf.constant(case["weights"], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([embeddings, weights])
        value = tf.reduce_mean(CLASS_KERNELS[case["loss"]](case["labels"], embeddings, weights, **case["options"]))
    _close(float(value), case["value"])
    grad_embeddings, grad_weights = tape.gradient(value, [embeddings, weights])
    _close(grad_embeddings.numpy(), np.array(case["grad"]), atol=1e-4)
    _close(grad_weights.numpy(), np.array(case["weights_grad"]), atol=1e-4)
