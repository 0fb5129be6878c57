"""Text that can always be printed: file names that are not UTF-8 shown as ``\\xNN``, never a traceback.

A file name that is not valid UTF-8 (``caf\\xe9.png`` written by a Latin-1
system) reaches Python as a ``str`` with surrogates (``os.fsdecode``); printed
as it is, it stops a program (``UnicodeEncodeError``) or shows as
``caf\\udce9``. ``printable`` writes its undecodable bytes as ``\\xNN``, and the
command line writes its stdout and stderr with the same rule
(``PRINTABLE_ERRORS``, a codec error handler), so every message shows such a
name one way. ``rankloss_tf.datasets.folder`` exports ``printable`` for the
readers of folders. ``reason`` gives a TensorFlow error as one line, without
its graph and op names (``{{function_node ...}}``, ``[Op:...]``).
"""

import codecs
import os
import re

__all__ = ["PRINTABLE_ERRORS", "UNDECODABLE", "printable", "reason"]

# The codec error handler of ``printable``: a command line's stdout and stderr write with it too, so that every
# message shows an undecodable file-name byte as ``\\xNN`` (Python's own handler would write ``\\udcNN``).
PRINTABLE_ERRORS = "rankloss_tf.printable"
# TensorFlow's errors for image bytes it cannot decode: the decode ops' names, and their messages.
UNDECODABLE = re.compile(r"Decode(Image|Png|Jpeg|Gif|Bmp|WebP)\b|Unknown image file format|Invalid (PNG|JPEG|GIF)")
_GRAPH_NAMES = re.compile(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]( name: ?)?|^Graph execution error:")


def _escape_unencodable(error):
    """Undecodable file-name bytes (the surrogates U+DC80..U+DCFF ``os.fsdecode`` makes) as ``\\xNN``; other
    characters the codec cannot write as Python escapes."""
    text = error.object[error.start:error.end]
    escaped = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                      c.encode("unicode_escape").decode("ascii") for c in text)
    return escaped, error.end


codecs.register_error(PRINTABLE_ERRORS, _escape_unencodable)


def printable(path):
    """A path as text that can be printed and written: undecodable file-name bytes as ``\\xNN``.

    Example:
    >>> printable(os.fsdecode(b"caf\\xe9.png"))
    'caf\\\\xe9.png'
    """
    return str(path).encode("utf-8", PRINTABLE_ERRORS).decode("utf-8")


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
