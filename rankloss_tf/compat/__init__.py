"""Migration layers: ``tfa`` mirrors tensorflow-addons' losses, ``v1`` TF 1.x contrib's metric learning.

``keras2.load_model`` (re-exported as ``tfa.load_model``) loads the Keras 2 ``.h5`` models of tfa users.
"""

from rankloss_tf.compat import keras2, tfa, v1

__all__ = ["keras2", "tfa", "v1"]
