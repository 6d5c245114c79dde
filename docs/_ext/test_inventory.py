"""Sphinx extension: an always-current inventory of the test suite for the Validation page.

At ``builder-inited`` it reads every ``tests/**/test_*.py`` with :mod:`ast` (nothing is
imported or run) and writes ``gen_modules/test_inventory.rst``: per file, the summary of its
module docstring and the names of its test functions, each with the first line of its
docstring when it has one. ``validation.rst`` includes that file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

_TARGET = Path("gen_modules") / "test_inventory.rst"


def _escape(text: str) -> str:
    """Escape the inline markup characters that could unbalance reStructuredText."""
    # Keep ``literal`` spans as they are; escape emphasis, substitution and target markers
    # elsewhere.
    parts = re.split(r"(``[^`]+``)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part)
        else:
            part = part.replace("\\", "\\\\").replace("`", "\\`")
            out.append(re.sub(r"([*|_])", r"\\\1", part))
    return "".join(out)


def _summary(docstring: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    if not docstring:
        return ""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _test_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            yield node.name, _summary(ast.get_docstring(node))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    yield f"{node.name}.{item.name}", _summary(ast.get_docstring(item))


def render(tests_dir: Path) -> str:
    """reStructuredText listing of the test files under ``tests_dir``."""
    lines: list[str] = []
    for path in sorted(tests_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(tests_dir.parent).as_posix()
        tests = list(_test_functions(tree))
        lines += [f"``{rel}``", "^" * (len(rel) + 4), ""]
        summary = _summary(ast.get_docstring(tree))
        if summary:
            lines += [_escape(summary), ""]
        lines += [f"{len(tests)} test function(s):", ""]
        for name, doc in tests:
            lines.append(f"* ``{name}``" + (f" — {_escape(doc)}" if doc else ""))
        lines.append("")
    if not lines:
        lines = ["(No test files were found.)", ""]
    return "\n".join(lines)


def _write(app) -> None:
    tests_dir = Path(app.confdir).parent / "tests"
    target = Path(app.srcdir) / _TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    text = render(tests_dir)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


def setup(app):
    """Register the generator."""
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
