"""Python 3.13+ colours a traceback on a pipe when ``PYTHON_COLORS`` or ``FORCE_COLOR`` says
so (the host's reach a plugin's children): such a traceback, read from a runner's fd 2, is read
back into its exception as a plain one is, its colours taken out; an escape that is not a
colour never reaches a record unescaped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.testing import FAST, Records, watching
from tests.other_pythons import other_python
from tests.plugins_fixtures import running

#: Variable naming a Python >= 3.13 that can run a runner (msgspec installed).
PYTHON_313_VARIABLE = "ISOPLUG_TEST_PYTHON_313"

CHILD = "def divide(a, b):\n    return a / b\n\n\ndivide(1, 0)\n"

#: What Python 3.13.0 printed for CHILD (at ``{path}``) with ``PYTHON_COLORS=1``, stderr a pipe.
COLOURED_313 = (
    "Traceback (most recent call last):\n"
    '  File \x1b[35m"{path}"\x1b[0m, line \x1b[35m5\x1b[0m, in \x1b[35m<module>\x1b[0m\n'
    "    \x1b[31mdivide\x1b[0m\x1b[1;31m(1, 0)\x1b[0m\n"
    "    \x1b[31m~~~~~~\x1b[0m\x1b[1;31m^^^^^^\x1b[0m\n"
    '  File \x1b[35m"{path}"\x1b[0m, line \x1b[35m2\x1b[0m, in \x1b[35mdivide\x1b[0m\n'
    "    return \x1b[31ma \x1b[0m\x1b[1;31m/\x1b[0m\x1b[31m b\x1b[0m\n"
    "           \x1b[31m~~\x1b[0m\x1b[1;31m^\x1b[0m\x1b[31m~~\x1b[0m\n"
    "\x1b[1;35mZeroDivisionError\x1b[0m: \x1b[35mdivision by zero\x1b[0m\n"
)

#: What the host prints of it: the plain traceback, without the carets (a read-back prints none).
PLAIN = (
    "Traceback (most recent call last):\n"
    '  File "{path}", line 5, in <module>\n'
    "    divide(1, 0)\n"
    '  File "{path}", line 2, in divide\n'
    "    return a / b\n"
    "ZeroDivisionError: division by zero"
)


def stderr_records(waiter: Records, name: str) -> list[logging.LogRecord]:
    return [r for r in waiter.records if r.name == f"plugin.{name}.stderr"]


def assert_read_back_plain(record: logging.LogRecord, path: Path) -> None:
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "ZeroDivisionError: division by zero"
    assert record.exc_info is not None and record.exc_info[0] is not None
    assert record.exc_info[0].__name__ == "ZeroDivisionError"
    assert logging.Formatter().formatException(record.exc_info) == PLAIN.format(path=path)


async def test_a_coloured_traceback_on_fd_2_arrives_plain_with_its_exception(
    tmp_path: Path,
) -> None:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    async with running(tmp_path, "scribbler") as (host, waiter):
        await host.call("scribbler", "write", fd=2, text=COLOURED_313.format(path=child))
        await host.call("scribbler", "write", fd=2, text="after it\n")
        await waiter.wait_for("plugin.scribbler.stderr", "after it")
    records = stderr_records(waiter, "scribbler")
    assert [r.getMessage() for r in records][1:] == ["after it"]
    assert_read_back_plain(records[0], child)


async def test_an_escape_that_is_no_colour_never_arrives_unescaped(tmp_path: Path) -> None:
    """Only colours are taken out: a screen clear in the exception's message (read back) or
    among the frames (kept as text) arrives escaped, as any text a plugin writes does."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    coloured = COLOURED_313.format(path=child)
    in_message = coloured.replace("division by zero", "\x1b[2Jdivision by zero")
    among_frames = coloured.replace("\x1b[35m5\x1b[0m", "\x1b[2J5")
    async with running(tmp_path, "scribbler") as (host, waiter):
        for text in (in_message, among_frames, "after them\n"):
            await host.call("scribbler", "write", fd=2, text=text)
        await waiter.wait_for("plugin.scribbler.stderr", "after them")
    first, second, _ = stderr_records(waiter, "scribbler")
    assert first.exc_info is not None
    assert str(first.exc_info[1]) == "\\x1b[2Jdivision by zero"
    assert second.exc_info is None
    assert "\\x1b[2J5" in second.getMessage() and "\\x1b[35m" in second.getMessage()
    for record in (first, second):
        shown = logging.Formatter().format(record)
        assert "\x1b" not in shown, shown


def python_313() -> str | None:
    """A Python >= 3.13 with msgspec: the one ISOPLUG_TEST_PYTHON_313 names, else one found."""
    return other_python((3, 13), PYTHON_313_VARIABLE)


async def test_a_313_childs_coloured_traceback_is_read_back(tmp_path: Path) -> None:
    """The real thing: a plugin on Python 3.13 whose child dies of an exception, with
    ``PYTHON_COLORS=1`` in the plugin's environment (as the host's would reach it)."""
    python = python_313()
    if python is None:
        pytest.skip(f"no Python >= 3.13 with msgspec here (name one in {PYTHON_313_VARIABLE})")
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    plugins = tmp_path / "plugins"
    folder = plugins / "col"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "col"\nversion = "1"\nentry = "col_plugin:Plugin"\npython = "{python}"\n'
        '[environment]\nPYTHON_COLORS = "1"\n'
    )
    (folder / "col_plugin.py").write_text(
        "import os, subprocess, sys\nimport isoplug\n\n"
        "class Plugin(isoplug.Plugin):\n"
        "    @isoplug.method\n"
        "    def run(self, path: str) -> int:\n"
        "        code = subprocess.run([sys.executable, path]).returncode\n"
        # On fd 2, as the child's traceback: one door, so the records keep their order.
        "        os.write(2, b'after it\\n')\n"
        "        return code\n"
    )
    with watching("plugin") as waiter:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(60)
            assert await host.call("col", "run", str(child)) == 1
            await waiter.wait_for("plugin.col.stderr", "after it")
    records = stderr_records(waiter, "col")
    assert [r.getMessage() for r in records][1:] == ["after it"]
    assert_read_back_plain(records[0], child)
