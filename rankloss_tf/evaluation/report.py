"""Formatting metric dictionaries for people."""

__all__ = ["format_table"]


def format_table(metrics):
    """A Markdown table of a ``{name: value}`` metric dictionary.

    Example:
    >>> print(format_table({"recall@1": 0.5, "nmi": 0.25}))
    | metric | value |
    | --- | --- |
    | recall@1 | 0.5000 |
    | nmi | 0.2500 |
    """
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return "\n".join(["| metric | value |", "| --- | --- |", *rows])
