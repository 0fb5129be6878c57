"""The machine a benchmark ran on, its load, and a stopwatch that records both ends of a run."""

import os
import platform
import sys
import time

__all__ = ["Stopwatch", "cpu", "describe", "line", "load"]


def describe():
    """``{"cpus", "platform", "python", "tensorflow", "keras"}`` of this machine (versions of the imported ones).

    Example:
    >>> describe()["cpus"] >= 1
    True
    """
    versions = {name: getattr(sys.modules.get(name), "__version__", None) for name in ("tensorflow", "keras")}
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            **versions}


def cpu():
    """The processor's name, or the architecture where the platform names none ("x86_64")."""
    return platform.processor() or platform.machine()


def line():
    """The machine in one line for a results page: "x86_64, 2 CPU cores, Python 3.11.2, TensorFlow 2.21.0".

    Example:
    >>> "CPU cores" in line()
    True
    """
    found = describe()
    parts = [platform.machine(), f"{found['cpus']} CPU cores", f"Python {found['python']}"]
    if found["tensorflow"]:
        parts.append(f"TensorFlow {found['tensorflow']}")
    return ", ".join(parts)


def load(digits=None):
    """The 1-, 5- and 15-minute load averages (``os.getloadavg``) as a list, rounded to ``digits`` if given."""
    return [value if digits is None else round(value, digits) for value in os.getloadavg()]


class Stopwatch:
    """Seconds since it started, with the load when it started and when it was read.

    Example:
    >>> watch = Stopwatch()
    >>> sorted(watch.record()) == ["load_after", "load_before", "seconds"]
    True
    """

    def __init__(self):
        self.started, self.load_before = time.perf_counter(), load()

    @property
    def seconds(self):
        return time.perf_counter() - self.started

    def record(self):
        """``{"seconds", "load_before", "load_after"}`` now."""
        return {"seconds": self.seconds, "load_before": self.load_before, "load_after": load()}
