"""The gallery of an ``Index`` as ONE table: per item a prepared embedding row, its squared norm, id, label, path."""

import dataclasses

import numpy as np

__all__ = ["Items", "check_labels"]

INT64_MAX = np.iinfo(np.int64).max


def check_labels(labels, n):
    """``[n]`` integer labels as int64; values outside int64 are refused, never wrapped.

    Raises:
        ValueError: another shape, a non-integer dtype, or a label outside
            the int64 range (e.g. a uint64 above 2**63 - 1).

    Example:
    >>> check_labels(np.array([1, 2], np.uint64), 2).dtype
    dtype('int64')
    >>> check_labels(np.array([2**63], np.uint64), 1)
    Traceback (most recent call last):
    ...
    ValueError: `labels` must fit in int64 (labels are stored as int64). Received: max label 9223372036854775808
    """
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be {n} integers. Received: shape={labels.shape}, dtype={labels.dtype}")
    if n and labels.dtype.kind == "u" and labels.max() > INT64_MAX:
        raise ValueError(
            f"`labels` must fit in int64 (labels are stored as int64). Received: max label {int(labels.max())}"
        )
    return labels.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Items:
    """The rows of a gallery, kept together: every operation keeps the five columns aligned.

    Columns (``N`` items): ``references`` float32 ``[N, D]`` (prepared:
    unit rows for cosine; int8 codes in an IVF index with int8 codes), ``sq_norms`` float32 ``[N]`` (zeros for cosine),
    ``ids`` str ``[N]``, ``labels`` int64 ``[N]``, ``paths`` str ``[N]``.

    Example:
    >>> items = Items.empty().concat(Items.of([[1.0, 0.0]], [0.0], ["a"], [3], [""]))
    >>> len(items), items.select(np.array([False])).ids.tolist()
    (1, [])
    """

    references: np.ndarray
    sq_norms: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    paths: np.ndarray

    def columns(self):
        """The five columns, in field order."""
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))

    @classmethod
    def empty(cls):
        """A table of no item (dimension unknown)."""
        return cls(np.zeros((0, 0), np.float32), np.zeros((0,), np.float32), np.zeros((0,), object),
                   np.zeros((0,), np.int64), np.zeros((0,), object))

    @classmethod
    def of(cls, references, sq_norms, ids, labels, paths):
        """A table from columns, converted to their dtypes and checked for one length.

        Raises:
            ValueError: columns of different lengths, or references that are not ``[N, D]``.
        """
        references = np.asarray(references)  # int8: the codes of an IVF index (retrieval.ivf_codes)
        items = cls(references if references.dtype == np.int8 else references.astype(np.float32, copy=False),
                    np.asarray(sq_norms, np.float32),
                    np.array([str(i) for i in np.asarray(ids, object).tolist()], object).reshape(-1),
                    check_labels(labels, len(np.asarray(labels))),
                    np.array([str(p) for p in np.asarray(paths, object).tolist()], object).reshape(-1))
        lengths = {len(column) for column in items.columns()}
        if items.references.ndim != 2 or len(lengths) != 1:
            raise ValueError(
                "The item columns must be [N, D] references and N squared norms, ids, labels and paths. "
                f"Received: shapes {[np.shape(column) for column in items.columns()]}"
            )
        return items

    def __len__(self):
        return len(self.ids)

    def concat(self, other):
        """This table followed by ``other``."""
        if not len(self):
            return other
        return Items(*(np.concatenate([mine, theirs]) for mine, theirs in zip(self.columns(), other.columns())))

    @classmethod
    def join(cls, tables):
        """The tables one after the other; the list ``tables`` is emptied as each is copied (bounded memory).

        Each column is allocated once and every table freed once copied, so
        joining many parts holds their total and one part, not two copies
        (``np.concatenate`` keeps every part alive until the end).

        Example:
        >>> parts = [Items.of([[1.0]], [0.0], ["a"], [1], [""]), Items.of([[2.0]], [0.0], ["b"], [2], [""])]
        >>> joined = Items.join(parts)
        >>> joined.ids.tolist(), joined.references[:, 0].tolist(), parts
        (['a', 'b'], [1.0, 2.0], [])
        """
        tables[:] = [table for table in tables if len(table)]
        if len(tables) < 2:
            return tables.pop() if tables else cls.empty()
        total, first = sum(map(len, tables)), tables[0].columns()
        columns = [np.empty((total, *column.shape[1:]), column.dtype) for column in first]
        start = 0
        while tables:  # the part is dropped as soon as it is copied
            table = tables.pop(0)
            for column, part in zip(columns, table.columns()):
                column[start : start + len(table)] = part
            start += len(table)
            del table
        return cls(*columns)

    def select(self, keep):
        """The rows where the boolean ``keep`` is True, in order."""
        return Items(*(column[keep] for column in self.columns()))
