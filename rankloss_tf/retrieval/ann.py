"""Optional approximate search backends of ``Index`` (pip extra ``rankloss-tf[ann]``).

- ``"faiss"``: ``faiss.IndexHNSWFlat`` (M = 32, efConstruction = 80,
  efSearch = max(64, 2k)) on the prepared references (inner product for the
  cosine metric, L2 otherwise). Package ``faiss-cpu``.
- ``"usearch"``: ``usearch.index.Index`` (HNSW, connectivity 16,
  expansion_add 128, expansion_search max(64, 2k); ``ip`` or ``l2sq``).
  Package ``usearch``.
- ``"faiss_ivf"``: ``faiss.IndexIVFFlat``, inverted lists like the ``"ivf"``
  backend's, with its options and defaults (``retrieval.ivf``): ``lists``
  (default ``ivf_lists.DEFAULT_LISTS``, at most N; trained on 64 rows per
  list) and ``probes`` (default: calibrated on the gallery for recall@10 >=
  0.95, ``ivf.calibrate_probes``; never more than the lists), checked by
  ``ivf.list_options`` and, once the gallery's size gives the default lists,
  ``ivf.check_probes``; the probes can also be given per search (clipped to
  the lists). Builds 10^6 items in seconds where the HNSW
  backends take minutes. Package ``faiss-cpu``.

Both return candidate items; their scores are then recomputed exactly and
the candidates ordered like the exact search (ties to the earlier item), so
only recall differs from ``"exact"`` (measured in benchmarks/bench_index.py).
Neither is a dependency: they are imported when asked for.
"""

import importlib

import numpy as np

from rankloss_tf.retrieval.ivf import calibrate_probes, check_probes, lists_for

__all__ = ["BACKENDS", "build", "check_backend", "search"]

BACKENDS = ("exact", "ivf", "faiss", "usearch", "faiss_ivf")  # "ivf": retrieval.ivf, no package
_PACKAGES = {"faiss": "faiss-cpu", "usearch": "usearch", "faiss_ivf": "faiss-cpu"}
TRAINING_ROWS_PER_LIST = 64  # faiss_ivf: k-means sample, as retrieval.kmeans


def check_backend(name):
    """Returns ``name`` if it is a backend whose package imports, else raises ValueError / ImportError.

    Example:
    >>> check_backend("exact")
    'exact'
    """
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}. Received: backend={name!r}")
    if name not in ("exact", "ivf"):
        _module(name)
    return name


def _module(name):
    try:
        return importlib.import_module({"usearch": "usearch.index", "faiss_ivf": "faiss"}.get(name, name))
    except ImportError as error:
        raise ImportError(
            f"The {name!r} backend needs `pip install {_PACKAGES[name]}` (or `pip install rankloss-tf[ann]`). "
            f"Received: {error}"
        ) from error


def build(name, references, metric, lists=None, probes=None):
    """Builds the approximate index of backend ``name`` over prepared references ``[N, D]``.

    ``lists`` / ``probes``: those of ``"faiss_ivf"`` (checked by
    ``ivf.list_options``; None: chosen as the ``"ivf"`` backend chooses them).

    Example:
    >>> backend = build("faiss", np.eye(3, dtype=np.float32), "cosine")  # doctest: +SKIP
    >>> search(backend, np.eye(3)[:1], np.eye(3, dtype=np.float32), None, 1, "cosine")[0].tolist()  # doctest: +SKIP
    [[0]]
    """
    references = np.ascontiguousarray(references, np.float32)
    dim = references.shape[1]
    if name == "faiss_ivf":
        return name, _faiss_ivf(references, metric, lists, probes)
    if name == "faiss":
        faiss = _module("faiss")
        kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        index = faiss.IndexHNSWFlat(dim, 32, kind)
        index.hnsw.efConstruction = 80
        index.add(references)
        return name, index
    usearch = _module("usearch")
    index = usearch.Index(ndim=dim, metric="ip" if metric == "cosine" else "l2sq", dtype="f32",
                          connectivity=16, expansion_add=128)
    index.add(np.arange(len(references), dtype=np.uint64), references)
    return name, index


def _faiss_ivf(references, metric, lists=None, probes=None, seed=0):
    """``faiss.IndexIVFFlat`` over prepared references, lists and probes given or chosen as the ``"ivf"`` backend's."""
    faiss = _module("faiss_ivf")
    check_probes(probes, lists, len(references))  # the default lists known now, as the "ivf" backend's training
    dim, lists = references.shape[1], lists_for(len(references), lists)
    kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, kind), dim, lists, kind)
    rng = np.random.default_rng(seed)
    sample = min(len(references), TRAINING_ROWS_PER_LIST * lists)
    index.train(references[np.sort(rng.choice(len(references), sample, replace=False))])
    index.add(references)
    if probes is None:
        centroids = index.quantizer.reconstruct_n(0, lists)
        assignment = index.quantizer.search(references, 1)[1][:, 0]
        sq_norms = np.sum(np.square(references), axis=1) if metric == "l2" else None
        probes = calibrate_probes(references, sq_norms, centroids, assignment, metric, seed=seed)
    index.nprobe = int(probes)
    return index


def _candidates(backend, queries, k, probes=None):
    name, index = backend
    if name == "faiss_ivf":
        # per call, more probes than lists probe every list (faiss clips them), as the "ivf" backend's search
        params = None if probes is None else _module(name).SearchParametersIVF(nprobe=int(probes))
        return index.search(queries, k, params=params)[1].astype(np.int64)
    if name == "faiss":
        index.hnsw.efSearch = max(64, 2 * k)
        return index.search(queries, k)[1].astype(np.int64)
    index.expansion_search = max(64, 2 * k)
    matches = index.search(queries, k)
    keys = np.asarray(matches.keys, np.int64).reshape(len(queries), -1)
    counts = np.asarray(getattr(matches, "counts", getattr(matches, "count", k))).reshape(-1)
    keys[np.arange(keys.shape[1])[None, :] >= counts[:, None]] = -1
    return keys


def search(backend, queries, references, sq_norms, k, metric, probes=None):
    """Approximate top k of raw query embeddings: ``(indices int32 [Nq, k], scores float32 [Nq, k])``.

    Candidates the backend leaves out (fewer than k) are filled with the next
    gallery items not yet listed, scored exactly. ``probes``: lists probed
    by this call (``"faiss_ivf"``, a checked positive integer; more than the
    lists probes them all; None: the index's).

    Example:
    >>> backend = build("usearch", np.eye(3, dtype=np.float32), "l2")  # doctest: +SKIP
    >>> search(backend, np.eye(3)[1:2], np.eye(3, dtype=np.float32), np.ones(3), 2, "l2")[0][0, 0]  # doctest: +SKIP
    1
    """
    queries = np.asarray(queries, np.float32)
    if metric == "cosine":
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    candidates = _candidates(backend, np.ascontiguousarray(queries), k, probes)
    for row in np.nonzero((candidates < 0).any(axis=1))[0]:
        found = [c for c in candidates[row] if c >= 0]
        spare = [i for i in range(len(references)) if i not in set(found)][: k - len(found)]
        candidates[row] = found + spare
    dots = np.einsum("qd,qkd->qk", queries, references[candidates])
    scores = dots if metric == "cosine" else 2.0 * dots - sq_norms[candidates]
    order = np.lexsort((candidates, -scores), axis=1)
    indices = np.take_along_axis(candidates, order, axis=1).astype(np.int32)
    scores = np.take_along_axis(scores, order, axis=1)
    if metric == "l2":
        scores = np.sqrt(np.maximum(np.sum(queries**2, axis=1, keepdims=True) - scores, 0.0))
    return indices, scores.astype(np.float32)
