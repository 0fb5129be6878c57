"""The package's one lazy-import mechanism (PEP 562): names imported when first used, so light entry points stay light.

``rankloss_tf``, ``rankloss_tf.retrieval`` and ``rankloss_tf.app`` use it: their
``__init__`` runs whenever one of their modules is imported (the command line's
``--help`` among them), so it imports nothing itself. Everywhere else imports
are explicit, at the top of the module.
"""

import importlib
import sys

__all__ = ["lazy_attributes"]


def lazy_attributes(package, homes):
    """``(__getattr__, __dir__)`` for a package whose names live in the modules ``homes`` names.

    Args:
        package: the package's ``__name__``.
        homes: ``{attribute: module that defines it}``; an attribute whose
            module is ``f"{package}.{attribute}"`` is that sub-module itself.

    Example:
    >>> getattr_, dir_ = lazy_attributes("pkg", {"sqrt": "math"})
    >>> getattr_("sqrt")(9.0), "sqrt" in dir_()
    (3.0, True)
    >>> getattr_, _ = lazy_attributes("rankloss_tf", {"cache": "rankloss_tf.cache"})
    >>> getattr_("cache").__name__
    'rankloss_tf.cache'
    """

    def __getattr__(name):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(homes[name])
        return module if homes[name] == f"{package}.{name}" else getattr(module, name)

    def __dir__():
        module = sys.modules.get(package)  # the package's own globals too, as dir() lists them
        return sorted(set(homes) | set(vars(module) if module else ()))

    return __getattr__, __dir__
