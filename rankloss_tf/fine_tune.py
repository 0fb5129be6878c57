"""Fine-tuning a pretrained backbone end to end: frozen batch-norm statistics and a lower backbone rate.

The photo recipe's two decisions about the network itself (the third, random
resized crop + flip, is ``rankloss_tf.data.augment.random_resized_crop_flip``
in the input pipeline):

- ``freeze_batch_norm``: the backbone's BatchNormalization layers run in
  inference mode: their moving statistics (and scale / offset) stay the
  ImageNet ones. Small P x K batches of a few classes give poor batch
  statistics; freezing them is the usual choice for fine-grained retrieval
  (e.g. Wang et al. 2019, "Multi-Similarity Loss", trains with frozen BN).
- ``BackboneRateAdam``: Adam whose step on the pretrained variables is scaled
  by ``backbone_scale`` (e.g. 0.1), the new embedding head training at the
  full rate.
"""

import keras

__all__ = ["BackboneRateAdam", "freeze_batch_norm"]

HEAD_PREFIX = "projection/"  # the variables of build_embedding_model's new dense head


def freeze_batch_norm(model):
    """Puts every BatchNormalization layer inside ``model`` in inference mode; returns how many.

    A Keras 3 BatchNormalization layer with ``trainable = False`` normalises
    with its moving statistics, even in ``fit``, and leaves them unchanged.

    Args:
        model: a Keras model or layer.

    Returns:
        The number of BatchNormalization layers frozen.

    Example:
    >>> from rankloss_tf.backbones import small_cnn
    >>> freeze_batch_norm(small_cnn((8, 8, 1)))
    2
    """
    frozen = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


@keras.saving.register_keras_serializable(package="rankloss_tf")
class BackboneRateAdam(keras.optimizers.Adam):
    """Adam with the learning rate scaled by ``backbone_scale`` on every variable outside the head.

    A variable whose path starts with ``head_prefix`` (the dense projection of
    ``build_embedding_model``: "projection/") takes the learning rate ``lr``;
    every other (the pretrained backbone's) takes ``backbone_scale * lr``.

    Args:
        backbone_scale: factor of the backbone's learning rate, > 0.
        head_prefix: path prefix of the head's variables.
        **kwargs: ``keras.optimizers.Adam`` arguments (``learning_rate``, ...).

    Raises:
        ValueError: ``backbone_scale`` not positive.

    Example:
    >>> BackboneRateAdam(0.1, learning_rate=1e-3).get_config()["backbone_scale"]
    0.1
    """

    def __init__(self, backbone_scale=0.1, head_prefix=HEAD_PREFIX, **kwargs):
        super().__init__(**kwargs)
        if not float(backbone_scale) > 0:
            raise ValueError(f"`backbone_scale` must be > 0. Received: backbone_scale={backbone_scale!r}")
        self.backbone_scale, self.head_prefix = float(backbone_scale), str(head_prefix)
        self._head_keys = set()

    def build(self, variables):
        # update_step may receive the backend's variable, which has no path: the head is known by key.
        self._head_keys = {self._var_key(v) for v in variables if v.path.startswith(self.head_prefix)}
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) not in self._head_keys:
            learning_rate = learning_rate * self.backbone_scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "backbone_scale": self.backbone_scale, "head_prefix": self.head_prefix}
