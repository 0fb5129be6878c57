"""Text that can always be printed: file names that are not UTF-8 shown as ``\\xNN``, never a traceback.

A file name that is not valid UTF-8 (``caf\\xe9.png`` written by a Latin-1
system) reaches Python as a ``str`` with surrogates (``os.fsdecode``); printed
as it is, it stops a program (``UnicodeEncodeError``) or shows as
``caf\\udce9``. ``printable`` writes its undecodable bytes as ``\\xNN``, and the
command line writes its stdout and stderr with the same rule
(``PRINTABLE_ERRORS``, a codec error handler), so every message shows such a
name one way. ``rankloss_tf.datasets.folder`` exports ``printable`` for the
readers of folders.
"""

import codecs
import os

__all__ = ["PRINTABLE_ERRORS", "printable"]

# The codec error handler of ``printable``: a command line's stdout and stderr write with it too, so that every
# message shows an undecodable file-name byte as ``\\xNN`` (Python's own handler would write ``\\udcNN``).
PRINTABLE_ERRORS = "rankloss_tf.printable"


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
