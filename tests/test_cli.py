"""The isoplug command line: help, the console format, and `isoplug run` / `demo` as a user
runs them (a real process, stopped with Ctrl-C)."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import signal
import sys
from pathlib import Path

import pytest

from isoplug.cli import ConsoleFormatter, main, use_colour
from tests.plugins_fixtures import plugins_dir, process_alive
from tests.processes import child_env

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("command", [[], ["run"], ["demo"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help works on the program and on each command, and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: isoplug" in capsys.readouterr().out


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
    )


def test_the_console_attributes_each_line_to_its_plugin_and_stream() -> None:
    """plugin.<id>.stdout shows the id and 'stdout'; continuation lines are indented."""
    formatter = ConsoleFormatter(colour=False)
    line = formatter.format(record("plugin.chatty.stdout", logging.INFO, "hello"))
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} chatty +stdout +hello", line)
    host = formatter.format(record("isoplug.host", logging.ERROR, "a\nb"))
    first, second = host.splitlines()
    assert " isoplug " in first and first.endswith("error    a")
    assert second.strip() == "b" and len(second) == len(first)
    assert "\033[" not in line + host
    # The third column is a stream or a level, never a source.
    info = formatter.format(record("isoplug.host", logging.INFO, "ready"))
    assert re.fullmatch(r"\S+ isoplug +info +ready", info), info


def test_the_console_shows_the_level_of_a_stream_record_not_at_the_streams_own() -> None:
    """A printed JSON line at error level, or a plugin's ERROR record on a logger named
    stdout, shows its level beside its stream: ``stdout`` alone is a line at INFO, the level
    of a printed line that says none (``stderr`` alone: WARNING)."""
    formatter = ConsoleFormatter(colour=False)
    cases = {
        ("plugin.p.stdout", logging.ERROR): "stdout:error",
        ("plugin.p.stdout", logging.DEBUG): "stdout:debug",
        ("plugin.p.stdout", logging.INFO): "stdout",
        ("plugin.p.stderr", logging.WARNING): "stderr",
        ("plugin.p.stderr", logging.INFO): "stderr:info",
        ("plugin.p.stderr", logging.CRITICAL): "stderr:critical",
    }
    for (name, level), label in cases.items():
        line = formatter.format(record(name, level, "said"))
        assert re.fullmatch(rf"\S+ p +{re.escape(label)} +said", line), line


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour needs a TTY that shows it (TERM set, not dumb); NO_COLOR turns it off even
    there."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour(Terminal()) and not use_colour(io.StringIO())
    for term in ("dumb", ""):
        monkeypatch.setenv("TERM", term)
        assert not use_colour(Terminal()), term
    monkeypatch.delenv("TERM")
    assert not use_colour(Terminal())
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Terminal())
    coloured = ConsoleFormatter(colour=True).format(record("plugin.x.stderr", logging.WARNING, "w"))
    assert "\033[33m" in coloured


def test_run_with_a_missing_directory_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong PLUGINS_DIR is an error message and exit code 2, not a traceback."""
    assert main(["run", "/nonexistent/plugins"]) == 2
    assert "does not exist" in capsys.readouterr().err


async def start_cli(*arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isoplug",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=child_env(NO_COLOR="1"),
    )


async def read_until(process: asyncio.subprocess.Process, pattern: str, seen: list[str]) -> None:
    assert process.stdout is not None
    while not any(re.search(pattern, line) for line in seen):
        line = await process.stdout.readline()
        if not line:
            raise AssertionError(f"CLI ended before {pattern!r}; output:\n{''.join(seen)}")
        seen.append(line.decode())


async def test_ctrl_c_stops_isoplug_run_and_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGINT to `isoplug run`: runners stop, a forked grandchild dies too, exit code 0."""
    directory = plugins_dir(tmp_path, "echo", "forker")
    cli = await start_cli("run", str(directory))
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await read_until(cli, r"plugin echo: ready", seen)
            await read_until(cli, r"plugin forker: ready", seen)
            await read_until(cli, r"forker: grandchild pid \d+", seen)
    except BaseException:
        cli.kill()
        await cli.communicate()
        raise
    output = "".join(seen)
    runner_pids = [int(p) for p in re.findall(r"ready: runner \w+ \(pid (\d+)\)", output)]
    grandchild = int(re.findall(r"grandchild pid (\d+)", output)[0])
    assert len(runner_pids) == 2
    assert all(process_alive(pid) for pid in [*runner_pids, grandchild])
    cli.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(cli.communicate(), 30)
    output += rest.decode()
    assert cli.returncode == 0, output
    assert "SIGINT: stopping every plugin" in output
    assert "all plugins stopped" in output
    assert "echo: teardown ran" in output
    left = [pid for pid in [*runner_pids, grandchild] if process_alive(pid)]
    assert not left, f"processes left behind: {left}\n{output}"


async def test_isoplug_demo_runs_the_examples_and_exits_zero() -> None:
    """`isoplug demo` (shortened) starts every example plugin, calls them, and exits 0."""
    cli = await start_cli("demo", "--duration", "1")
    output, _ = await asyncio.wait_for(cli.communicate(), 60)
    text = output.decode()
    assert cli.returncode == 0, text
    assert re.search(r"demo: 4 plugin\(s\) ready in [\d.]+ s", text), text
    assert "demo: chatty.shout(text='isolated') returned 'ISOLATED!'" in text
    assert "demo: chatty.dance() raised MethodNotFound" in text
    assert "refused as expected" in text
    assert "stopped: runner chatty" in text
    assert text.startswith("columns: time, source")
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3} isoplug +info +demo: 4 plugin", text), text
    assert "What you saw:" in text and "isoplug new" in text
    # An installed isoplug has no docs/ folder: the demo points at what it has.
    assert "isoplug --help" in text and "docs/" not in text
