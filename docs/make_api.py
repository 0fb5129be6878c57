"""Writes docs/api.md, the API reference, from the docstrings of rankloss_tf.

Public modules are `rankloss_tf`, the modules named in a parent's `__all__`, and
the modules that define an `__all__`. A module's public names are its `__all__`
(else the names it defines without a leading underscore). Each object is
documented once, under the shortest public path that exports it.

    python docs/make_api.py          # rewrite docs/api.md
    python docs/make_api.py --check  # exit 1 if docs/api.md is out of date
"""

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"
PACKAGE = "rankloss_tf"
EXAMPLE_HEADERS = ("Example:", "Examples:")
# The methods of a public class that are documented: its own, public, with a docstring.
SKIPPED_METHODS = {"call", "get_config", "from_config", "build", "compute_output_shape"}


def public_modules():
    """Public module objects, the package first, then sorted by dotted name."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + sorted(
        info.name for info in pkgutil.walk_packages(package.__path__, prefix=PACKAGE + ".")
    )
    modules = []
    for name in names:
        if any(part.startswith("_") for part in name.split(".")):
            continue
        module = importlib.import_module(name)
        if (module.__doc__ or "").startswith("Deprecated:"):
            continue  # a forward to a name's new home, documented there
        parent_name, _, leaf = name.rpartition(".")
        parent_all = getattr(sys.modules.get(parent_name), "__all__", ())
        if name == PACKAGE or hasattr(module, "__all__") or leaf in parent_all:
            modules.append(module)
    return modules


def public_names(module):
    """The module's `__all__`, else the public names it defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def api_entries():
    """`[(module, [(name, object), ...]), ...]`, each object under its first public path."""
    seen = set()
    entries = []
    for module in public_modules():
        members = []
        for name in public_names(module):
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue  # documented in its own section
            if (inspect.isclass(value) or inspect.isroutine(value)) and id(value) in seen:
                continue
            seen.add(id(value))
            members.append((name, value))
        entries.append((module, members))
    return entries


def split_example(doc):
    """`(text, example)`: a docstring and its Example section (without the header)."""
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if line.strip() in EXAMPLE_HEADERS:
            return "\n".join(lines[:index]).rstrip(), inspect.cleandoc("\n".join(lines[index + 1 :]))
    return doc, ""


def render_doc(doc, level):
    """Markdown for one docstring: summary as text, details as text block, example as code."""
    doc = inspect.cleandoc(doc or "")
    text, example = split_example(doc)
    summary, _, details = text.partition("\n\n")
    parts = [" ".join(summary.split())]
    if details.strip():
        parts.append("```text\n" + details.strip("\n") + "\n```")
    if example:
        parts.append(f"{'#' * level} Example\n\n```python\n{example}\n```")
    return "\n\n".join(parts)


def signature(value):
    try:
        text = str(inspect.signature(value))
    except (TypeError, ValueError):
        return "(...)"
    return text.replace("(self, ", "(").replace("(self)", "()")


def render_member(path, value):
    if inspect.isclass(value):
        lines = [f"### class `{path}{signature(value)}`", "", render_doc(value.__doc__, 4)]
        for method_name, method in vars(value).items():
            if method_name.startswith("_") or method_name in SKIPPED_METHODS:
                continue
            if isinstance(method, property):
                lines += ["", f"- property `{method_name}`: " + " ".join(inspect.cleandoc(method.__doc__ or "").split())]
            elif inspect.isfunction(method) and method.__doc__:
                summary = inspect.cleandoc(method.__doc__).split("\n\n")[0]
                lines += ["", f"- `{method_name}{signature(method)}`: " + " ".join(summary.split())]
        return "\n".join(lines)
    if inspect.isroutine(value):
        return "\n".join([f"### `{path}{signature(value)}`", "", render_doc(value.__doc__, 4)])
    return f"### `{path}`\n\n```python\n{path.rpartition('.')[2]} = {value!r}\n```"


def anchor(module_name):
    return module_name.replace(".", "")


def render():
    """The whole of docs/api.md as a string."""
    entries = api_entries()
    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/make_api.py from the docstrings; do not edit by hand. -->",
        "",
        "Every example below runs as a doctest (`tests/test_doctests.py`), with `np`, `tf` and",
        "`keras` imported.",
        "",
    ]
    out += [f"- [`{module.__name__}`](#{anchor(module.__name__)})" for module, _ in entries]
    for module, members in entries:
        out += ["", f"## `{module.__name__}`", "", render_doc(module.__doc__, 3)]
        for name, value in members:
            out += ["", render_member(f"{module.__name__}.{name}", value)]
    text = "\n".join(out) + "\n"
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # no memory addresses in reprs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if API_MD.read_text() != text:
            sys.exit(f"{API_MD} is out of date: run `python docs/make_api.py`")
        return
    API_MD.write_text(text)


if __name__ == "__main__":
    main()
