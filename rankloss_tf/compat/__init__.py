"""Migration layers: `tfa` mirrors tensorflow-addons' losses."""

from rankloss_tf.compat import tfa

__all__ = ["tfa"]
