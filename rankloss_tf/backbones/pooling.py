"""How a pretrained backbone's last feature map becomes one feature vector: average or generalised mean.

``"avg"`` is global average pooling, what ImageNet classifiers end with.
``"gem"`` is generalised-mean pooling (Radenovic, Tolias and Chum 2018,
"Fine-tuning CNN image retrieval with no human annotation"): per channel
``(mean over positions of max(x, eps) ** p) ** (1 / p)``; ``p = 1`` is the
average, ``p -> inf`` the maximum, and ``p ~ 3`` weights a channel's strong
responses (the object) over its weak ones (the background), which tends to
give better features for retrieval with a frozen backbone. This module is the
one home of the choice: ``build_backbone`` pools with it and the feature cache
keys its features by ``pooling_key``.
"""

import math
import numbers

import keras

__all__ = ["GEM_POWER", "POOLINGS", "GeneralizedMeanPooling2D", "check_pooling", "generalized_mean_pool",
           "pooling_key"]

POOLINGS = ("avg", "gem")
GEM_POWER = 3.0


def check_pooling(pooling, gem_power=GEM_POWER):
    """Validates a pooling choice.

    Args:
        pooling: "avg" or "gem".
        gem_power: the exponent ``p`` of "gem", a finite number > 0.

    Returns:
        ``(pooling, float(gem_power))``.

    Raises:
        ValueError: an unknown pooling or a power that is not a finite positive number.

    Example:
    >>> check_pooling("gem", 3)
    ('gem', 3.0)
    """
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if (isinstance(gem_power, bool) or not isinstance(gem_power, numbers.Real) or not math.isfinite(gem_power)
            or gem_power <= 0):
        raise ValueError(f"`gem_power` must be a finite number > 0. Received: gem_power={gem_power!r}")
    return pooling, float(gem_power)


def pooling_key(pooling, gem_power=GEM_POWER):
    """What the feature cache adds to its key for a pooling: None for "avg" (the keys of caches written
    before pooling was a choice stay valid), "gem<p>" for "gem".

    Example:
    >>> pooling_key("avg"), pooling_key("gem", 3)
    (None, 'gem3.0')
    """
    pooling, gem_power = check_pooling(pooling, gem_power)
    return None if pooling == "avg" else f"gem{gem_power}"


def generalized_mean_pool(feature_map, power=GEM_POWER, epsilon=1e-6):
    """Generalised-mean pooling over the positions of ``[N, H, W, C]`` feature maps.

    ``out[n, c] = (mean over h, w of max(x[n, h, w, c], epsilon) ** power) ** (1 / power)``,
    computed as ``m * mean((x / m) ** power) ** (1 / power)`` with ``m`` the channel's maximum, so a
    large ``power`` neither overflows nor underflows. NaN in a channel gives NaN for that channel.

    Args:
        feature_map: float tensor ``[N, H, W, C]``.
        power: the exponent ``p`` > 0 (1: average pooling of the clamped map; large: max pooling).
        epsilon: the floor values are clamped to (GeM is defined for positive responses).

    Returns:
        ``[N, C]`` tensor of the input's dtype.

    Example:
    >>> x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    >>> [round(float(generalized_mean_pool(x, p)[0, 0]), 3) for p in (1.0, 3.0, 100.0)]
    [2.5, 2.924, 3.945]
    """
    x = keras.ops.convert_to_tensor(feature_map)
    clamped = keras.ops.where(keras.ops.isnan(x), x, keras.ops.maximum(x, epsilon))
    peak = keras.ops.max(clamped, axis=(1, 2), keepdims=True)
    mean = keras.ops.mean((clamped / peak) ** power, axis=(1, 2))
    return mean ** (1.0 / power) * keras.ops.squeeze(peak, axis=(1, 2))


@keras.saving.register_keras_serializable(package="rankloss_tf")
class GeneralizedMeanPooling2D(keras.layers.Layer):
    """Generalised-mean (GeM) pooling of ``[N, H, W, C]`` maps to ``[N, C]`` (``generalized_mean_pool``).

    Args:
        power: the exponent ``p`` > 0 (default 3; 1 is average pooling).
        epsilon: the floor the responses are clamped to.

    Example:
    >>> tuple(GeneralizedMeanPooling2D(power=1.0)(np.full((2, 3, 3, 4), 2.0, np.float32)).shape)
    (2, 4)
    """

    def __init__(self, power=GEM_POWER, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        _, self.power = check_pooling("gem", power)
        self.epsilon = float(epsilon)

    def call(self, feature_map):
        return generalized_mean_pool(feature_map, self.power, self.epsilon)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "power": self.power, "epsilon": self.epsilon}
