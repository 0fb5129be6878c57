"""The results writer: ``<out>.json`` (the record) and ``<out>.md`` (its page), each replaced atomically."""

import json
from pathlib import Path

__all__ = ["read", "write"]


def write(out, record, markdown=None):
    """Writes ``record`` to ``out.json`` and, when given, ``markdown`` to ``out.md``; returns the JSON path.

    Args:
        out: the results path without suffix (``benchmarks/results/cars196_recipe``).
        record: anything ``json.dumps`` takes.
        markdown: the page's text, or None for no page.
    """
    from rankloss_tf.io.atomic import write_file  # here: processes that block rankloss_tf import harness (bench_ivf)

    out = Path(out)
    path = write_file(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    if markdown is not None:
        write_file(out.with_suffix(".md"), markdown)
    return path


def read(out, default=None):
    """The record of ``out.json``, or ``default`` when the file is absent."""
    path = Path(out).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else default
