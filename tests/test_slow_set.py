"""The slow set named in conftest.SLOW names tests that exist, each with its reason."""

import ast
from pathlib import Path

from tests.conftest import SLOW

TESTS = Path(__file__).resolve().parent


def test_every_slow_name_is_a_test():
    missing = []
    for key, reason in SLOW.items():
        file, name = key.split("[")[0].split("::")
        path = TESTS / file
        names = {node.name for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.FunctionDef)} if path.is_file() else set()
        if name not in names:
            missing.append(key)
        assert len(reason) > 20, f"{key}: say why it is still worth running"
    assert not missing, f"conftest.SLOW names tests that do not exist: {missing}"
