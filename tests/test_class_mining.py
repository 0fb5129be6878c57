"""Tests of hard negative class mining (Sohn 2016, section 3.2)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rankloss_tf.data import HardClassMining, HardClassSampler
from rankloss_tf.losses import NPairLoss

GROUPS, PER_GROUP = 8, 4


def _confusable_classes(per_class=3):
    """32 classes in 8 groups of 4 near-identical class embeddings; example = its class id."""
    num_classes = GROUPS * PER_GROUP
    labels = np.repeat(np.arange(num_classes) * 10, per_class)
    examples = (labels // 10).astype(np.float32)[:, None]
    rng = np.random.default_rng(0)
    table = np.repeat(rng.normal(size=(GROUPS, 16)), PER_GROUP, axis=0) + 0.05 * rng.normal(size=(num_classes, 16))
    table = tf.constant(table, tf.float32)
    return examples, labels, lambda batch: tf.gather(table, tf.cast(batch[:, 0], tf.int32))


def _groups(labels):
    return set((labels // 10) // PER_GROUP)


@pytest.mark.parametrize("samples_per_candidate", [1, 2])
def test_picks_confusable_classes(samples_per_candidate):
    x, y, embed = _confusable_classes()
    sampler = HardClassSampler(x, y, classes_per_batch=PER_GROUP, samples_per_class=2,
                               samples_per_candidate=samples_per_candidate, neighbours=6, seed=1)
    before = [len(_groups(labels.numpy())) for _, labels in sampler.dataset().take(20)]
    assert np.mean(before) > 2.0, "random batches should mix groups"
    sampler.refresh(embed)
    batches = list(sampler.dataset().take(20))
    for examples, labels in batches:
        labels = labels.numpy()
        assert len(_groups(labels)) == 1, f"classes {sorted(set(labels))} are not one confusable group"
        values, counts = np.unique(labels, return_counts=True)
        assert values.size == PER_GROUP and (counts == 2).all()
        assert (examples.numpy()[:, 0] * 10 == labels).all()
    assert len({tuple(sorted(set(b[1].numpy()))) for b in batches}) > 2, "seed class is not random"


def test_greedy_matches_a_numpy_oracle():
    # Each step adds the class whose largest similarity to the chosen ones is highest.
    rng = np.random.default_rng(2)
    table = rng.normal(size=(9, 5)).astype(np.float32)
    x = np.arange(9, dtype=np.float32)[:, None].repeat(2, axis=0)
    y = np.arange(9).repeat(2)
    sampler = HardClassSampler(x, y, classes_per_batch=4, samples_per_class=2, samples_per_candidate=1,
                               neighbours=8)
    sampler.refresh(lambda batch: tf.gather(table, tf.cast(batch[:, 0], tf.int32)))
    similarity = table @ table.T
    np.fill_diagonal(similarity, -np.inf)
    firsts = set()
    for step in range(12):
        chosen = list(sampler.classes[sampler.select_classes(tf.constant([step, 0], tf.int64)).numpy()])
        firsts.add(chosen[0])
        expected = chosen[:1]
        while len(expected) < 4:
            score = similarity[expected].max(axis=0)
            score[expected] = -np.inf
            expected.append(int(np.argmax(score)))
        assert chosen == expected
    assert len(firsts) > 3


def test_deterministic_and_validates():
    x, y, embed = _confusable_classes()

    def run():
        sampler = HardClassSampler(x, y, classes_per_batch=4, samples_per_class=2, num_candidates=16, seed=4)
        sampler.refresh(embed)
        return np.concatenate([labels.numpy() for _, labels in sampler.dataset().take(5)])

    np.testing.assert_array_equal(run(), run())
    with pytest.raises(ValueError, match="samples_per_candidate"):
        HardClassSampler(x, y, classes_per_batch=4, samples_per_candidate=3)
    with pytest.raises(ValueError, match="num_candidates"):
        HardClassSampler(x, y, classes_per_batch=4, num_candidates=3)


def test_callback_refreshes_during_fit():
    x, y, _ = _confusable_classes(per_class=4)
    x = x + 0.1 * np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    sampler = HardClassSampler(x, y, classes_per_batch=4, samples_per_class=2, seed=0)
    refreshes = []
    original = sampler.refresh
    sampler.refresh = lambda embed_fn: refreshes.append(1) or original(embed_fn)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8)])
    model.compile(optimizer="sgd", loss=NPairLoss())
    history = model.fit(sampler.dataset(), steps_per_epoch=4, epochs=2, shuffle=False, verbose=0,
                        callbacks=[HardClassMining(sampler, every_n_batches=3)])
    assert np.isfinite(history.history["loss"]).all()
    assert len(refreshes) == 1 + 8 // 3
