"""How many lists an IVF gallery has, and how many of them a query may probe: one rule, no TensorFlow.

``retrieval.ivf`` (the ``"ivf"`` backend), ``retrieval.ann`` (``"faiss_ivf"``)
and ``rankloss-tf index`` (its ``--help`` and its checks, before any
embedding) share these; the module imports no TensorFlow, so that the
command line's ``--help`` stays fast.
"""

import math

__all__ = ["DEFAULT_LISTS", "LIST_BACKENDS", "check_probes", "default_lists", "lists_for"]

LIST_BACKENDS = ("ivf", "faiss_ivf")  # the backends with lists and probes (faiss_ivf: retrieval.ann)

# The default number of lists of a gallery of N items, in words: what default_lists computes.
DEFAULT_LISTS = "round(sqrt(N)), at most N // 16, at least 1, for a gallery of N items"


def default_lists(size):
    """The default number of lists for a gallery of ``size`` items (``DEFAULT_LISTS``).

    Example:
    >>> default_lists(10**6), default_lists(10**4), default_lists(200), default_lists(48), default_lists(10)
    (1000, 100, 12, 3, 1)
    """
    return int(max(1, min(round(math.sqrt(size)), size // 16)))


def lists_for(size, lists=None):
    """The number of lists of a gallery of ``size`` items: ``lists``, or ``default_lists(size)``; at most ``size``.

    Example:
    >>> lists_for(10**6), lists_for(10**6, lists=4096), lists_for(5, lists=8)
    (1000, 4096, 5)
    """
    return int(min(lists or default_lists(size), size))


def check_probes(probes, lists=None, size=None, names=("probes", "lists")):
    """Refuses more ``probes`` than lists: a query probes at most every list.

    The lists are ``lists`` while the gallery's size is not known, then
    ``lists_for(size, lists)`` (the default lists depend on the size): check
    once at construction and again once the gallery is there.

    Args:
        probes: lists probed per query, or None (calibrated: always fits).
        lists: the number of lists asked for, or None (the default).
        size: the gallery's size, or None when not known yet.
        names: how the message names probes and lists (the command line's
            ``("--probes", "--lists")``).

    Returns:
        ``probes``.

    Raises:
        ValueError: ``probes`` exceeds the lists (the message gives the
            number of lists and how it was set).

    Example:
    >>> check_probes(3, lists=4), check_probes(8), check_probes(3, size=200)
    (3, 8, 3)
    >>> check_probes(13, size=200)
    Traceback (most recent call last):
    ...
    ValueError: probes 13 exceeds the 12 lists of this gallery of 200 items (the default lists: round(sqrt(N)), \
at most N // 16, at least 1, for a gallery of N items): a query probes at most every list; pass probes 12 or less. \
Received: probes=13, lists=None
    """
    if probes is None or (lists is None and size is None):
        return probes
    most = lists if size is None else lists_for(size, lists)
    if probes <= most:
        return probes
    probes_name, lists_name = names
    if size is None:
        where = f"{lists_name} {lists}"
    else:
        how = f"{lists_name} {lists}" if lists else f"the default lists: {DEFAULT_LISTS}"
        where = f"the {most} lists of this gallery of {size} items ({how})"
    raise ValueError(f"{probes_name} {probes} exceeds {where}: a query probes at most every list; pass {probes_name} "
                     f"{most} or less. Received: {probes_name}={probes}, {lists_name}={lists}")
