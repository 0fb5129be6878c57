"""Runs the docstring examples of every rankloss_tf module as doctests.

Each example sees `np`, `tf`, `keras` and the names of its own module.
"""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import rankloss_tf

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(rankloss_tf.__path__, prefix="rankloss_tf.")
) + ["rankloss_tf"]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    for test in finder.find(module, name, globs={**vars(module), "np": np, "tf": tf, "keras": keras}):
        runner.run(test, out=report.append)
    keras.backend.clear_session()
    assert runner.failures == 0, "".join(report)
