"""Package attributes imported when first used (PEP 562), so light entry points stay light."""

import importlib

__all__ = ["lazy_attributes"]


def lazy_attributes(package, homes):
    """``(__getattr__, __dir__)`` for a package whose names live in the modules ``homes`` names.

    Args:
        package: the package's ``__name__``.
        homes: ``{attribute: module that defines it}``.

    Example:
    >>> getattr_, dir_ = lazy_attributes("pkg", {"sqrt": "math"})
    >>> getattr_("sqrt")(9.0), "sqrt" in dir_()
    (3.0, True)
    """

    def __getattr__(name):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    def __dir__():
        return sorted(homes)

    return __getattr__, __dir__
