"""isoplug's own text files are opened with their encoding named: never the locale's, and never
an ``EncodingWarning`` under ``-X warn_default_encoding`` (with ``-W error``, an exception
where a message was due: a runner's thread-limit report was lost to one, and logged as the
plugin's warning). Read from the source's syntax trees: a call of the builtin ``open`` in a
text mode, or a ``read_text`` / ``write_text`` call, names ``encoding``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "isoplug"


def _is_binary_mode(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else None
    for keyword in call.keywords:
        if keyword.arg == "mode":
            mode = keyword.value
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value


def _without_encoding(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        text_io = (isinstance(function, ast.Name) and function.id == "open") or (
            isinstance(function, ast.Attribute) and function.attr in ("read_text", "write_text")
        )
        if not text_io or _is_binary_mode(node):
            continue
        named = {keyword.arg for keyword in node.keywords}
        if "encoding" not in named and None not in named:  # None: a **kwargs passed on
            lines.append(node.lineno)
    return lines


# Parsed at collection, before any test leaves a thread formatting tracebacks: on Python
# 3.11.0-3.11.7 two threads' parses break each other (CPython gh-106905; see
# test_sanitizer_rule.py).
_TREES = {
    str(path.relative_to(SRC)): ast.parse(path.read_text(encoding="utf-8"), str(path))
    for path in SRC.rglob("*.py")
}
_SAMPLE = ast.parse(
    "open(p)\nopen(p, 'rb')\nopen(p, encoding='utf-8')\nq.read_text()\nq.write_text(s, **k)"
)


def test_every_text_file_isoplug_opens_names_its_encoding() -> None:
    found = [f"{name}:{line}" for name, tree in _TREES.items() for line in _without_encoding(tree)]
    assert not found, found


def test_the_check_finds_an_open_without_encoding() -> None:
    assert _without_encoding(_SAMPLE) == [1, 4]
