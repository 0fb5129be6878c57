"""TensorFlow's error messages as the one line a command prints: the reason, without graph and op names."""

import re

__all__ = ["UNDECODABLE", "reason"]

# TensorFlow's errors for image bytes it cannot decode: the decode ops' names, and their messages.
UNDECODABLE = re.compile(r"Decode(Image|Png|Jpeg|Gif|Bmp|WebP)\b|Unknown image file format|Invalid (PNG|JPEG|GIF)")
_GRAPH_NAMES = re.compile(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]( name: ?)?|^Graph execution error:")


def reason(error, pattern=None):
    """The first line of a TensorFlow error's message (the first matching ``pattern``, when given), without the
    ``{{function_node ...}}``, ``[[{{node ...}}]]`` and ``[Op:...]`` parts, at most 200 characters.

    Example:
    >>> class Error(Exception):
    ...     message = "{{function_node __wrapped__DecodeImage}} Input is empty. [Op:DecodeImage] name: "
    >>> reason(Error())
    'Input is empty.'
    """
    text = (getattr(error, "message", "") or str(error)).strip()
    lines = [_GRAPH_NAMES.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line] or [type(error).__name__]
    chosen = next((line for line in lines if pattern is None or pattern.search(line)), lines[0])
    return chosen[:200]
