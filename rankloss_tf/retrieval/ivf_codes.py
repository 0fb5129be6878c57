"""Compressed rows of the IVF index: int8 scalar quantisation, one range per dimension.

``Index(backend="ivf", codes="int8")`` keeps each prepared gallery row as 128
int8 codes instead of 128 float32 (a quarter of the memory, in the index and
its SavedModel): dimension ``d`` of a row is ``offset[d] + scale[d] * code``,
``code`` in [-128, 127], the range of each dimension being the minimum and
maximum of that dimension over the rows the quantiser is fitted on (the first
rows added; later rows outside it are clipped to it). The *decoded* rows are
the gallery: searches score them exactly (``q . x`` = ``(q * scale) . code +
q . offset``, so a scan multiplies the query by the codes cast to float32, list
by list), and an int8 index loaded with ``backend="exact"`` searches them.
Squared norms (L2) are those of the decoded rows.
"""

import numpy as np

__all__ = ["CODES", "Quantiser", "check_codes"]

CODES = ("float32", "int8")
LEVELS = 255  # codes 0..255 stored shifted by -128
SHIFT = 128
BLOCK = 65536  # rows encoded at a time


def check_codes(codes):
    """``codes`` if it names a row encoding of ``CODES``, else ValueError naming what was received.

    Example:
    >>> check_codes("int8")
    'int8'
    """
    if codes not in CODES:
        raise ValueError(f"`codes` must be one of {CODES}. Received: codes={codes!r}")
    return codes


class Quantiser:
    """Per-dimension int8 scalar quantiser: ``x ~ offset + scale * code``.

    Args:
        scale: float32 ``[D]`` step between two codes (positive).
        offset: float32 ``[D]`` the value of code 0.

    Example:
    >>> q = Quantiser.fit(np.array([[0.0, -1.0], [1.0, 1.0]], np.float32))
    >>> q.encode(np.array([[0.25, 1.0]], np.float32)).tolist()
    [[-64, 127]]
    >>> [round(float(v), 3) for v in q.decode(q.encode(np.array([[0.25, 1.0]], np.float32)))[0]]
    [0.251, 1.0]
    """

    def __init__(self, scale, offset):
        self.scale = np.asarray(scale, np.float32)
        self.offset = np.asarray(offset, np.float32)

    @classmethod
    def fit(cls, rows):
        """The quantiser of float rows ``[N, D]``: each dimension's [min, max] in 255 steps."""
        rows = np.asarray(rows, np.float32)
        low, high = rows.min(axis=0), rows.max(axis=0)
        scale = np.maximum(high - low, 1e-12) / LEVELS
        return cls(scale, low + SHIFT * scale)

    def encode(self, rows):
        """int8 ``[N, D]`` codes of float rows (values outside the fitted range clipped to it)."""
        rows = np.asarray(rows, np.float32)
        codes = np.empty(rows.shape, np.int8)
        for start in range(0, len(rows), BLOCK):  # float temporaries of one block only
            block = np.rint((rows[start : start + BLOCK] - self.offset) / self.scale)
            codes[start : start + BLOCK] = np.clip(block, -SHIFT, LEVELS - SHIFT)
        return codes

    def decode(self, codes):
        """float32 ``[N, D]`` rows of int8 codes (one float array, scaled and shifted in place)."""
        rows = np.array(codes, np.float32)  # always a new array: the in-place steps never touch the input
        rows *= self.scale
        rows += self.offset
        return rows

