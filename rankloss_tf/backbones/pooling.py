"""How a pretrained backbone's last feature map becomes one feature vector: average or generalised mean.

``"avg"`` is global average pooling, what ImageNet classifiers end with.
``"gem"`` is generalised-mean pooling (Radenovic, Tolias and Chum 2018,
"Fine-tuning CNN image retrieval with no human annotation"): per channel
``(mean over positions of max(x, eps) ** p) ** (1 / p)``; ``p -> inf``
approaches the maximum, and ``p ~ 3`` weights a channel's strong responses (the
object) over its weak ones (the background), which tends to give better
features for retrieval with a frozen backbone.

The responses are clamped at ``eps`` first (GeM is defined for positive
responses), so ``p = 1`` is the average of the *clamped* map. That is the plain
average (to within ``eps``: exact zeros count as ``eps``) for non-negative maps,
those of backbones ending in ReLU / ReLU6 such as EfficientNet-Lite0 or ResNet50;
for signed maps, those of backbones ending in swish, hard-swish or a residual sum
such as keras.applications' EfficientNet, MobileNetV3 or ConvNeXt, it is larger
than the average, their negative responses counting as ``eps``.

This module is the one home of the choice and of its rules (``check_pooling``,
``check_gem_power``, ``check_gem_epsilon``: the layer, the function,
``build_backbone`` and the command line's configuration all check with them);
``build_backbone`` pools with it and the feature cache keys its features by
``pooling_key``.
"""

import math
import numbers

import keras

__all__ = ["GEM_EPSILON", "GEM_POWER", "GEM_POWER_RANGE", "POOLINGS", "GeneralizedMeanPooling2D", "check_gem_epsilon",
           "check_gem_power", "check_pooling", "generalized_mean_pool", "pooling_key"]

POOLINGS = ("avg", "gem")
GEM_POWER = 3.0
# The exponents p accepted, [low, high]: why, in check_gem_power's docstring.
GEM_POWER_RANGE = (0.1, 1000.0)
GEM_EPSILON = 1e-6


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_gem_power(gem_power):
    """Validates GeM's exponent ``p``: a number in ``GEM_POWER_RANGE``, [0.1, 1000].

    Why 0.1: GeM is computed as ``m * mean((x / m) ** p) ** (1 / p)`` (``m`` the channel's maximum),
    and the float32 rounding of that mean (about 1e-7 relative, more the more positions it sums) is
    raised to ``1 / p``: the result's relative error is about float32 eps / p. Measured against
    float64, at p = 0.1 it is at most 2e-6 on 7 x 7 maps and 1.6e-5 on 28 x 28 ones (p = 1: 3e-7 and
    1.2e-6); at p = 0.01 ten times that (1.5e-4 on 28 x 28), and it keeps growing as 1 / p (at
    p = 1e-6 the result is off by several percent, at p = 1e-8 it is the maximum). Below 0.1 the
    features would carry float32 noise rather than the generalised mean; p near 0 (the geometric
    mean) is out of this formula's reach in float32. Why 1000: there GeM is already within
    ln(H * W) / 1000 of the maximum, relatively (0.4% on 7 x 7 maps): a larger exponent changes little
    and is more likely a typo.

    Returns:
        ``float(gem_power)``.

    Raises:
        ValueError: a power that is not a number in the range, naming it and the range.

    Example:
    >>> check_gem_power(3)
    3.0
    """
    low, high = GEM_POWER_RANGE
    if not _is_number(gem_power) or not low <= gem_power <= high:  # NaN fails the comparison
        raise ValueError(f"`gem_power` must be a number in [{low:g}, {high:g}] (below {low:g} float32 rounding, "
                         f"about 1e-7 / p, swamps the generalised mean). Received: gem_power={gem_power!r}")
    return float(gem_power)


def check_gem_epsilon(epsilon):
    """Validates GeM's clamp ``epsilon``: a finite number > 0 (0 gives 0 / 0 on an all-non-positive channel).

    Returns:
        ``float(epsilon)``.

    Raises:
        ValueError: naming the value.

    Example:
    >>> check_gem_epsilon(1e-6)
    1e-06
    """
    if not _is_number(epsilon) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"`epsilon` must be a finite number > 0 (the floor GeM clamps responses to). "
                         f"Received: epsilon={epsilon!r}")
    return float(epsilon)


def check_pooling(pooling, gem_power=None, pooling_note=""):
    """Validates a pooling choice and its exponent: the one rule of ``build_backbone`` and ``TrainConfig``.

    Args:
        pooling: "avg" or "gem".
        gem_power: the exponent ``p`` of "gem" (``check_gem_power``); None: ``GEM_POWER`` for "gem".
            Given with "avg", it is refused (it would be ignored).
        pooling_note: said after ``pooling`` in that refusal (e.g. where the pooling came from).

    Returns:
        ``(pooling, p)``: ``p`` a float for "gem", None for "avg".

    Raises:
        ValueError: an unknown pooling, an invalid power, or a power given with "avg".

    Example:
    >>> check_pooling("gem", 3), check_pooling("gem"), check_pooling("avg")
    (('gem', 3.0), ('gem', 3.0), ('avg', None))
    """
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling; known: {', '.join(POOLINGS)}. Received: pooling={pooling!r}")
    if pooling != "gem":
        if gem_power is not None:
            raise ValueError(f"`gem_power` applies to pooling='gem'. Received: gem_power={gem_power!r}, "
                             f"pooling={pooling!r}{pooling_note}")
        return pooling, None
    return pooling, check_gem_power(GEM_POWER if gem_power is None else gem_power)


def pooling_key(pooling, gem_power=None):
    """What the feature cache adds to its key for a pooling: None for "avg" (the keys of caches written
    before pooling was a choice stay valid), "gem<p>" for "gem".

    Example:
    >>> pooling_key("avg"), pooling_key("gem", 3)
    (None, 'gem3.0')
    """
    pooling, gem_power = check_pooling(pooling, gem_power)
    return None if pooling == "avg" else f"gem{gem_power}"


def _check_feature_maps(shape):
    """Refuses a shape that is not ``[N, H, W, C]`` (rank 4) or whose known ``H`` or ``W`` is 0."""
    if getattr(shape, "rank", 0) is None:
        return  # a graph's tensor of unknown rank: nothing to check before it runs
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"GeM pooling expects feature maps [batch, height, width, channels] (rank 4). "
                         f"Received: shape {shape} (rank {len(shape)})")
    if 0 in shape[1:3]:
        raise ValueError(f"GeM pooling needs at least one position (height and width > 0); the mean of no "
                         f"position is undefined. Received: shape {shape}")


def generalized_mean_pool(feature_map, power=GEM_POWER, epsilon=GEM_EPSILON):
    """Generalised-mean pooling over the positions of ``[N, H, W, C]`` feature maps.

    ``out[n, c] = (mean over h, w of max(x[n, h, w, c], epsilon) ** power) ** (1 / power)``,
    computed as ``m * mean((x / m) ** power) ** (1 / power)`` with ``m`` the channel's maximum, so a
    large ``power`` neither overflows nor underflows. As the average and the maximum would: a channel
    holding +inf gives +inf, one holding NaN gives NaN (the other channels are unaffected), and an
    empty batch gives ``[0, C]``. Maps with no position (``H`` or ``W`` 0, when known) are refused;
    in a graph where they are unknown, such maps give NaN, as the average does.

    Args:
        feature_map: float tensor ``[N, H, W, C]``.
        power: the exponent ``p``, in ``GEM_POWER_RANGE`` (``check_gem_power``). 1: the average of the
            clamped map (the plain average for non-negative maps); large: the maximum.
        epsilon: the floor values are clamped to, a finite number > 0 (GeM is defined for positive
            responses).

    Returns:
        ``[N, C]`` tensor of the input's dtype.

    Raises:
        ValueError: an invalid ``power`` or ``epsilon``, or maps that are not ``[N, H, W, C]`` with
            ``H, W > 0``, naming them.

    Example:
    >>> x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    >>> [round(float(generalized_mean_pool(x, p)[0, 0]), 3) for p in (1.0, 3.0, 100.0)]
    [2.5, 2.924, 3.945]
    """
    power, epsilon = check_gem_power(power), check_gem_epsilon(epsilon)
    x = keras.ops.convert_to_tensor(feature_map)
    _check_feature_maps(x.shape)
    if x.shape[0] == 0:  # keras.ops.max refuses an empty tensor when run eagerly
        return keras.ops.zeros((0, x.shape[-1]), dtype=x.dtype)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float16", "bfloat16"):  # mixed precision: the powers in float32, the result in the input's dtype
        x = keras.ops.cast(x, "float32")
    clamped = keras.ops.where(keras.ops.isnan(x), x, keras.ops.maximum(x, epsilon))
    peak = keras.ops.max(clamped, axis=(1, 2))  # [N, C]
    infinite = keras.ops.equal(peak, math.inf)  # -inf only when a graph's maps have no position: NaN below
    scale = keras.ops.where(infinite, keras.ops.ones_like(peak), peak)  # no inf / inf = NaN in the ratio
    mean = keras.ops.mean((clamped / scale[:, None, None, :]) ** power, axis=(1, 2))
    return keras.ops.cast(keras.ops.where(infinite, peak, mean ** (1.0 / power) * scale), dtype)


@keras.saving.register_keras_serializable(package="rankloss_tf")
class GeneralizedMeanPooling2D(keras.layers.Layer):
    """Generalised-mean (GeM) pooling of ``[N, H, W, C]`` maps to ``[N, C]`` (``generalized_mean_pool``).

    Per channel ``(mean over positions of max(x, epsilon) ** power) ** (1 / power)``: ``power = 1`` is
    the average of the map clamped at ``epsilon``, which is the plain average only for non-negative maps
    (ReLU / ReLU6 backbones such as EfficientNet-Lite0); on signed maps (e.g. ConvNeXt's) it is larger,
    negative responses counting as ``epsilon``. Large powers approach the maximum.

    Args:
        power: the exponent ``p``, in ``GEM_POWER_RANGE`` = [0.1, 1000] (default 3; below 0.1 float32
            rounding, about 1e-7 / p relative, swamps the result: see ``check_gem_power``).
        epsilon: the floor the responses are clamped to, a finite number > 0 (default 1e-6).

    Raises:
        ValueError: an invalid ``power`` or ``epsilon`` (when built), or inputs that are not
            ``[batch, height, width, channels]`` maps with height and width > 0 (when called).

    Example:
    >>> tuple(GeneralizedMeanPooling2D(power=1.0)(np.full((2, 3, 3, 4), 2.0, np.float32)).shape)
    (2, 4)
    """

    def __init__(self, power=GEM_POWER, epsilon=GEM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.power = check_gem_power(power)
        self.epsilon = check_gem_epsilon(epsilon)

    def build(self, input_shape):
        _check_feature_maps(input_shape)
        super().build(input_shape)

    def call(self, feature_map):
        return generalized_mean_pool(feature_map, self.power, self.epsilon)

    def compute_output_shape(self, input_shape):
        _check_feature_maps(input_shape)
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "power": self.power, "epsilon": self.epsilon}
