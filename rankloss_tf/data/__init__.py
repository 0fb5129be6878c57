"""Training batches: the P x K class-balanced sampler and hard negative class mining."""

from rankloss_tf.data.sampler import pk_batches

__all__ = ["pk_batches"]
