"""Deprecated: today's losses live in ``rankloss_tf.losses`` (one module per family); this module re-exports them.

``from rankloss_tf.losses_modern import X`` keeps working for one release and warns;
write ``from rankloss_tf.losses import X``.

Example:
>>> import warnings
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore", DeprecationWarning)
...     from rankloss_tf.losses_modern import XBM
>>> XBM.__module__
'rankloss_tf.losses.xbm'
"""

import warnings

from rankloss_tf.losses import (  # noqa: F401 (re-exported)
    MODERN_LOSSES,
    XBM,
    ArcFaceLoss,
    ClassCosines,
    ClassLoss,
    CosFaceLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SupConLoss,
    embedding_part,
    with_class_head,
)

warnings.warn("rankloss_tf.losses_modern is deprecated: import its names from rankloss_tf.losses "
              "(the module goes in the next release)", DeprecationWarning, stacklevel=2)
