"""The machine a benchmark ran on, its load, and a stopwatch that records both ends of a run."""

import os
import platform
import sys
import time

__all__ = ["Stopwatch", "describe", "load"]


def describe():
    """``{"cpus", "platform", "python", "tensorflow", "keras"}`` of this machine (versions of the imported ones).

    Example:
    >>> describe()["cpus"] >= 1
    True
    """
    versions = {name: getattr(sys.modules.get(name), "__version__", None) for name in ("tensorflow", "keras")}
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            **versions}


def load():
    """The 1-, 5- and 15-minute load averages (``os.getloadavg``) as a list."""
    return list(os.getloadavg())


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
