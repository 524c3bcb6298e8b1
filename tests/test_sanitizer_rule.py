"""The one rule, read from the source: a host module that puts text a runner or a peer sent into
a log record or an exception message passes it through :mod:`isoplug.wire.sanitize` first.

The check reads the host-side modules' syntax trees. A *sink* is a logging call (``debug`` ...
``critical``, ``exception``, ``log`` on something named like a logger) or the construction of an
exception that is raised. A *sent value* is an attribute named like a text field of a wire
message (derived from :mod:`isoplug.wire.messages`, so a new field is covered at once) read off
anything but ``self``. A sent value inside a sink must sit inside a call to a sanitizing
function, or its line must say why it is safe in a ``# sanitized: <why>`` comment (a host
object whose field shares a wire field's name). The check cannot follow a value through a local
variable; it catches the common slip of formatting ``hello.name`` or ``error.message`` straight
into a message.

A path is outside text too: a plugin names the files in its folder (one named with ESC or a
newline), an operator names the plugins folder. So a logging call in a host module may not
quote a value named like a path (``path``, ``*_dir``, ``folder``, ``roots``, ``cause`` ...)
but through a sanitizing call (``clean_path``, or a module's helper named ``_shown`` that
wraps it).
"""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import msgspec

from isoplug.wire import messages

SRC = Path(__file__).resolve().parent.parent / "src" / "isoplug"

#: Modules that run in the host (or any receiving process) and may quote what they received.
HOST_SIDE = sorted(
    [
        *(SRC / "host").glob("*.py"),
        *(SRC / "rpc").glob("*.py"),
        *(SRC / "otel").glob("*.py"),
        SRC / "wire" / "connection.py",
        SRC / "wire" / "codec.py",
        *(
            SRC / "logs" / f"{name}.py"
            for name in (
                "receiver",
                "replay",
                "replay_reports",
                "routing",
                "limits",
                "tracebacks",
                "sourcelines",
                "report_throttle",
                "handler_errors",
            )
        ),
    ]
)

SANITIZERS = frozenset({"clean_text", "clean_block", "cap_text", "clean_logger_name", "clean_path"})
LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def _carries_text(annotation: object) -> bool:
    if annotation is str:
        return True
    return any(_carries_text(argument) for argument in typing.get_args(annotation))


def wire_text_fields() -> frozenset[str]:
    """The name of every field of a wire message that can hold text."""
    names: set[str] = set()
    for value in vars(messages).values():
        if isinstance(value, type) and issubclass(value, msgspec.Struct):
            hints = typing.get_type_hints(value)
            names.update(field for field in value.__struct_fields__ if _carries_text(hints[field]))
    return frozenset(names)


def _is_log_call(node: ast.Call) -> bool:
    function = node.func
    if not (isinstance(function, ast.Attribute) and function.attr in LOG_METHODS):
        return False
    base = ast.unparse(function.value).lower()
    return "log" in base


def _raised_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node.exc
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
    ]


def _called(call: ast.Call) -> str | None:
    """The name a call calls: ``clean_text`` for ``sanitize.clean_text(...)`` too."""
    function = call.func
    if isinstance(function, ast.Attribute):
        return function.attr
    return function.id if isinstance(function, ast.Name) else None


def _unsanitized(node: ast.AST, fields: frozenset[str]) -> list[ast.Attribute]:
    """Sent values under ``node`` that no sanitizing call encloses."""
    found: list[ast.Attribute] = []

    def visit(current: ast.AST) -> None:
        if isinstance(current, ast.Call) and _called(current) in SANITIZERS:
            return
        if (
            isinstance(current, ast.Attribute)
            and current.attr in fields
            and not (isinstance(current.value, ast.Name) and current.value.id in {"self", "cls"})
        ):
            found.append(current)
            return
        for child in ast.iter_child_nodes(current):
            visit(child)

    visit(node)
    return found


def parsed(source: str, filename: str) -> ast.Module:
    """``source``'s tree, parsed once. Python 3.11's ``ast`` keeps its recursion count in state
    shared by threads (gh-106905), and its ``traceback`` parses source lines for its carets: a
    test's leftover thread formatting a traceback while this parses can make it raise
    ``SystemError: AST constructor recursion depth mismatch``. The source files are parsed
    when the module is collected, before any test runs a thread."""
    tree = _TREES.get((source, filename))
    return tree if tree is not None else ast.parse(source, filename)


#: Trees parsed at collection (see :func:`parsed`).
_TREES: dict[tuple[str, str], ast.Module] = {}


def violations(source: str, filename: str, fields: frozenset[str]) -> list[str]:
    """``file:line: expression`` for every sent value that reaches a sink unsanitized."""
    tree = parsed(source, filename)
    lines = source.splitlines()
    sinks = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and _is_log_call(node)]
    sinks += _raised_calls(tree)
    problems = []
    for sink in sinks:
        for argument in [*sink.args, *(keyword.value for keyword in sink.keywords)]:
            for attribute in _unsanitized(argument, fields):
                if "# sanitized: " in lines[attribute.lineno - 1]:
                    continue
                problems.append(f"{filename}:{attribute.lineno}: {ast.unparse(attribute)}")
    return problems


FIELDS = wire_text_fields()


def test_the_wire_has_the_text_fields_the_rule_is_about() -> None:
    assert {"name", "role", "reason", "message", "traceback", "levelname"} <= FIELDS


def test_the_rule_catches_a_sent_value_formatted_raw() -> None:
    """The checker itself: raw values are caught, sanitized ones and the host's own pass."""
    source = """
log.warning("peer %s said %s", hello.name, clean_text(reject.reason, 80))
_log.error(f"unknown runner {hello.name!r}")
raise ProtocolError(f"bad role {clean_text(hello.role, 40)} from {error.message}")
log.info("mine: %s", self.name)
log.info("theirs: %s", change.message)  # sanitized: built by the supervisor
print(hello.name)
"""
    assert violations(source, "example.py", FIELDS) == [
        "example.py:2: hello.name",
        "example.py:3: hello.name",
        "example.py:4: error.message",
    ]


def test_no_host_module_formats_a_sent_value_without_the_sanitizer() -> None:
    problems = [
        problem
        for path in HOST_SIDE
        if path.exists()
        for problem in violations(path.read_text(), str(path.relative_to(SRC)), FIELDS)
    ]
    assert problems == [], "\n".join(problems)


#: Names of values that hold a path (or several), by the host modules' naming.
PATH_NAME = re.compile(r"(path|dir|directory|folder|root|cause|file)s?$")
#: Module helpers that quote a path through clean_path.
PATH_SANITIZERS = SANITIZERS | {"shown_path", "shown_paths"}


def _unsanitized_paths(node: ast.AST) -> list[ast.expr]:
    """Path-named values under ``node`` that no sanitizing call encloses."""
    found: list[ast.expr] = []

    def visit(current: ast.AST) -> None:
        if isinstance(current, ast.Call) and _called(current) in PATH_SANITIZERS:
            return
        if isinstance(current, ast.Attribute | ast.Name):
            name = current.attr if isinstance(current, ast.Attribute) else current.id
            if PATH_NAME.search(name):
                found.append(current)
                return
        for child in ast.iter_child_nodes(current):
            visit(child)

    visit(node)
    return found


def path_violations(source: str, filename: str) -> list[str]:
    """``file:line: expression`` for every path-named value a logging call quotes raw."""
    tree = parsed(source, filename)
    problems = []
    for sink in ast.walk(tree):
        if not (isinstance(sink, ast.Call) and _is_log_call(sink)):
            continue
        # The first argument is the format, the host's own words.
        for argument in [*sink.args[1:], *(keyword.value for keyword in sink.keywords)]:
            for value in _unsanitized_paths(argument):
                problems.append(f"{filename}:{value.lineno}: {ast.unparse(value)}")
    return problems


def test_the_path_rule_catches_a_path_logged_raw() -> None:
    source = """
_log.info("reload: watching %s", ", ".join(map(str, roots)))
_log.error("cannot read %s: %s", self._plugins_dir, clean_path(exc, 80))
_log.info("reload: %s changed", shown_path(cause))
_log.info("reload: %s", clean_path(manifest.path, 80))
"""
    assert path_violations(source, "example.py") == [
        "example.py:2: roots",
        "example.py:3: self._plugins_dir",
    ]


def test_no_host_module_logs_a_path_without_the_sanitizer() -> None:
    problems = [
        problem
        for path in sorted((SRC / "host").glob("*.py"))
        for problem in path_violations(path.read_text(), str(path.relative_to(SRC)))
    ]
    assert problems == [], "\n".join(problems)


for _path in {*HOST_SIDE, *(SRC / "host").glob("*.py")}:
    if _path.exists():
        _text = _path.read_text()
        _TREES[(_text, str(_path.relative_to(SRC)))] = ast.parse(_text, str(_path.relative_to(SRC)))
