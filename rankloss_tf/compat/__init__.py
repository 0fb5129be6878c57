"""Migration layers: `tfa` mirrors tensorflow-addons' losses, `v1` TF 1.x contrib's metric learning."""

from rankloss_tf.compat import tfa, v1

__all__ = ["tfa", "v1"]
