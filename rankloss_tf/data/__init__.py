"""Training batches: the P x K class-balanced sampler and hard negative class mining."""

from rankloss_tf.data.class_mining import HardClassMining, HardClassSampler
from rankloss_tf.data.sampler import PKSampler, pk_batches

__all__ = ["HardClassMining", "HardClassSampler", "PKSampler", "pk_batches"]
