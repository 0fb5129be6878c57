"""Keras ``Loss`` classes: thin, serialisable wrappers over ``rankloss_tf.ops`` kernels.

One module per loss family, each the kernel's import and its Keras class:
``contrastive``, ``triplet`` (semi-hard, batch-hard), ``npair`` (N-pair, angular),
``multi_similarity``, ``supcon`` (SupCon, NT-Xent), ``xbm`` (a memory of past batches
for the pair-based losses), ``proxy`` (Proxy-Anchor, ProxyNCA) and ``margin_softmax``
(ArcFace, CosFace), the last two over ``class_head``'s ``ClassCosines``. ``base`` holds
the contract they all keep (exact labels, per-anchor kernels, Keras' reduction,
``cross_replica``). ``get(name)`` builds a loss from its short name (``registry()``).

Every class is registered with Keras as ``rankloss_tf>ClassName`` when this package is
imported; ``.keras`` files saved by any release load (``rankloss_tf.load_model``).

Example:
>>> import keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
>>> model.compile(optimizer="adam", loss=AngularLoss(alpha=45))
"""

from rankloss_tf.losses.base import ClassLoss, RankingLoss
from rankloss_tf.losses.class_head import ClassCosines, embedding_part, with_class_head
from rankloss_tf.losses.contrastive import ContrastiveLoss
from rankloss_tf.losses.margin_softmax import ArcFaceLoss, CosFaceLoss
from rankloss_tf.losses.multi_similarity import MultiSimilarityLoss
from rankloss_tf.losses.npair import AngularLoss, NPairAngularLoss, NPairLoss
from rankloss_tf.losses.proxy import ProxyAnchorLoss, ProxyNCALoss
from rankloss_tf.losses.supcon import NTXentLoss, SupConLoss
from rankloss_tf.losses.triplet import TripletHardLoss, TripletSemiHardLoss
from rankloss_tf.losses.xbm import XBM

__all__ = [
    "RankingLoss",
    "ContrastiveLoss",
    "TripletSemiHardLoss",
    "TripletHardLoss",
    "NPairLoss",
    "AngularLoss",
    "NPairAngularLoss",
    "MultiSimilarityLoss",
    "SupConLoss",
    "NTXentLoss",
    "XBM",
    "ClassCosines",
    "ClassLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "ArcFaceLoss",
    "CosFaceLoss",
    "with_class_head",
    "embedding_part",
    "LOSSES",
    "MODERN_LOSSES",
    "registry",
    "get",
]

# Short names for ``get`` and ``rankloss-tf train --loss``: the losses of the first
# release, then those the field uses now (issue 31).
LOSSES = {
    "contrastive": ContrastiveLoss,
    "triplet_semihard": TripletSemiHardLoss,
    "triplet_hard": TripletHardLoss,
    "npair": NPairLoss,
    "angular": AngularLoss,
    "npair_angular": NPairAngularLoss,
}
MODERN_LOSSES = {
    "multi_similarity": MultiSimilarityLoss,
    "supcon": SupConLoss,
    "ntxent": NTXentLoss,
    "proxy_anchor": ProxyAnchorLoss,
    "proxy_nca": ProxyNCALoss,
    "arcface": ArcFaceLoss,
    "cosface": CosFaceLoss,
}


def registry():
    """Every short name and its class (``LOSSES`` and ``MODERN_LOSSES``), a new dict each call.

    Example:
    >>> sorted(registry())[:3]
    ['angular', 'arcface', 'contrastive']
    """
    return {**LOSSES, **MODERN_LOSSES}


def get(name, **kwargs):
    """Builds a loss from its short name, as used by the command line.

    Args:
        name: a short name of ``registry()``: "contrastive", "triplet_semihard",
            "triplet_hard", "npair", "angular", "npair_angular", and today's
            losses ("multi_similarity", "supcon", "ntxent", "proxy_anchor",
            "proxy_nca", "arcface", "cosface").
        **kwargs: the loss class's arguments.

    Returns:
        A ``RankingLoss`` instance.

    Raises:
        ValueError: for an unknown name.

    Example:
    >>> get("angular", alpha=40).alpha
    40.0
    """
    known = registry()
    if name not in known:
        raise ValueError(f"Unknown loss. Expected one of {sorted(known)}. Received: name={name!r}")
    return known[name](**kwargs)
