"""`isoplug run` / `demo` / `schema` as scripts and CI jobs use them: exit codes, which stream
says what, signals (SIGHUP, a repeated signal), a closed stdout, and which log level rules."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from isoplug.testing import eventually
from tests.plugins_fixtures import FIXTURES, plugins_dir, process_alive
from tests.processes import child_env

ROOT = Path(__file__).parent.parent
# This checkout's code, not an installed isoplug, runs in the subprocess.
ENV = child_env(NO_COLOR="1")


def isoplug(
    *arguments: str,
    stdout: int = subprocess.PIPE,
    env: Mapping[str, str] = ENV,
    python: str = sys.executable,
    **options: Any,
) -> subprocess.CompletedProcess[str]:
    """``python -m isoplug ARGUMENTS`` to its end; ``options``: more of ``subprocess.run``'s
    (``cwd``, ``user``, ``preexec_fn``)."""
    return subprocess.run(
        [python, "-m", "isoplug", *arguments],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        env=env,
        **options,
    )


def write_plugin(directory: Path, plugin_id: str, code: str, manifest: str = "") -> None:
    folder = directory / plugin_id
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{plugin_id}_plugin:P"\n{manifest}'
    )
    (folder / f"{plugin_id}_plugin.py").write_text(textwrap.dedent(code))


#: A plugin whose setup() never returns.
NEVER_READY = """
    import asyncio
    import isoplug

    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            await asyncio.Event().wait()
"""

#: A plugin whose first start dies saying why on its stderr, and whose setup() then never
#: returns.
CRASHES_THEN_NEVER_READY = """
    import asyncio
    import os
    from pathlib import Path

    import isoplug

    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            started_once = Path(__file__).with_name("started-once")
            if not started_once.exists():
                started_once.touch()
                os.write(2, b"cache warm-up: disk full\\n")
                os._exit(3)
            await asyncio.Event().wait()
"""


class Cli:
    """`isoplug run ...` in a subprocess, its stdout read line by line, stderr kept apart."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def until(self, pattern: str, count: int = 1) -> re.Match[str]:
        """The ``count``-th line matching ``pattern`` since the start, read as needed."""
        assert self.process.stdout is not None
        while True:
            found = [match for line in self.lines if (match := re.search(pattern, line))]
            if len(found) >= count:
                return found[count - 1]
            line = (await self.process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"no {pattern!r} before the end:\n{''.join(self.lines)}")
            self.lines.append(line)

    async def finish(self) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.process.communicate(), 60)
        self.lines.append(out.decode() if out is not None else "")
        assert self.process.returncode is not None
        return self.process.returncode, "".join(self.lines), err.decode()


@asynccontextmanager
async def cli(
    *arguments: str,
    stdout: int = asyncio.subprocess.PIPE,
    env: Mapping[str, str] = ENV,
    python: str = sys.executable,
    launcher: Sequence[str] = (),
    **options: Any,
) -> AsyncIterator[Cli]:
    """``python -m isoplug ARGUMENTS``, run by ``launcher`` (a command that runs the rest of
    its arguments, as ``unshare``); ``options``: more of ``create_subprocess_exec``'s
    (``cwd``, ``user``)."""
    process = await asyncio.create_subprocess_exec(
        *launcher,
        python,
        "-m",
        "isoplug",
        *arguments,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        **options,
    )
    try:
        async with asyncio.timeout(60):
            yield Cli(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


# -- exit codes and streams --------------------------------------------------------------------


def test_errors_that_end_the_command_go_to_stderr(tmp_path: Path) -> None:
    """A missing folder: rc 2, said on stderr only; an empty one: rc 1, on stderr."""
    result = isoplug("run", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stdout == "" and "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = isoplug("run", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "nothing to run" in result.stderr and "nothing to run" not in result.stdout
    assert "a plugins folder holds one folder per plugin" in result.stderr
    # The folder above the plugins folder: said where the plugins are.
    (tmp_path / "app" / "plugins").mkdir(parents=True)
    shutil.copytree(FIXTURES / "echo", tmp_path / "app" / "plugins" / "echo")
    result = isoplug("run", str(tmp_path / "app"))
    assert result.returncode == 1
    assert f"is one level deeper: isoplug run {tmp_path / 'app' / 'plugins'}?" in result.stderr


async def test_exit_code_1_when_a_plugin_failed_or_was_skipped(tmp_path: Path) -> None:
    """Ctrl-C after a plugin failed to import and another's manifest was invalid: rc 1."""
    directory = plugins_dir(tmp_path, "echo", "import_raises", "unknown_field")
    async with cli("run", str(directory)) as run:
        await run.until(r"plugin import_raises: failed")
        await run.until(r"plugin echo: ready")
        run.process.send_signal(signal.SIGINT)
        code, output, _ = await run.finish()
    assert code == 1, output
    assert "all plugins stopped" in output
    assert re.search(r"exit code 1: 1 plugin\(s\) skipped; failed: import_raises", output), output


async def test_sighup_stops_every_plugin_cleanly(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP) stops the plugins as Ctrl-C does: teardown runs, rc 0."""
    async with cli("run", str(plugins_dir(tmp_path, "echo"))) as run:
        pid = int((await run.until(r"ready: runner echo \(pid (\d+)\)"))[1])
        run.process.send_signal(signal.SIGHUP)
        code, output, _ = await run.finish()
    assert code == 0, output
    assert "SIGHUP: stopping every plugin" in output and "echo: teardown ran" in output
    assert not process_alive(pid)


SLOW_TEARDOWN = """
    import time

    import isoplug


    class P(isoplug.Plugin):
        async def teardown(self) -> None:
            print("teardown started", flush=True)
            time.sleep(0.5)  # longer than the repeat window: a signal now is a second one
            print("teardown still running", flush=True)
            time.sleep(60)
"""


async def test_two_signals_at_once_are_one_request(tmp_path: Path) -> None:
    """SIGINT twice back to back (as `timeout -s INT` sends): a clean stop, not a kill."""
    async with cli("run", str(plugins_dir(tmp_path, "echo"))) as run:
        await run.until(r"plugin echo: ready")
        os.kill(run.process.pid, signal.SIGINT)
        os.kill(run.process.pid, signal.SIGINT)
        code, output, _ = await run.finish()
    assert code == 0, output
    assert "again: killing" not in output and "echo: teardown ran" in output


async def test_a_later_second_signal_kills_every_runner(tmp_path: Path) -> None:
    """A signal past the repeat window is a second request: runners killed, rc 130."""
    write_plugin(tmp_path / "plugins", "slow", SLOW_TEARDOWN)
    async with cli("run", str(tmp_path / "plugins")) as run:
        pid = int((await run.until(r"ready: runner slow \(pid (\d+)\)"))[1])
        run.process.send_signal(signal.SIGTERM)
        await run.until(r"slow +stdout +teardown still running")
        run.process.send_signal(signal.SIGTERM)
        code, output, _ = await run.finish()
    assert code == 130, output
    assert "SIGTERM again: killing every runner now" in output
    assert not process_alive(pid)


# -- a closed stdout ---------------------------------------------------------------------------

TICKER = """
    import asyncio

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            self.task = asyncio.create_task(self.tick(ctx))

        async def tick(self, ctx: isoplug.PluginContext) -> None:
            n = 0
            while True:
                n += 1
                ctx.logger.info("tick %d", n)
                await asyncio.sleep(0.05)

        async def teardown(self) -> None:
            self.task.cancel()
            with open(__file__ + ".teardown", "w") as done:
                done.write("ran")
"""


QUIET = """
    import isoplug


    class P(isoplug.Plugin):
        async def teardown(self) -> None:
            with open(__file__ + ".teardown", "w") as done:
                done.write("ran")
"""


@pytest.mark.parametrize(("code", "last_line"), [(TICKER, b"tick 2"), (QUIET, b"ready:")])
async def test_run_stops_quietly_when_stdout_is_closed(
    tmp_path: Path, code: str, last_line: bytes
) -> None:
    """`isoplug run DIR | head`: once the reader is gone, the plugins stop cleanly (their
    teardown runs), nothing is said on stderr, and the code is 141; also when nothing is
    written after the reader left (a quiet plugin: no write finds the pipe closed)."""
    write_plugin(tmp_path / "plugins", "ticker", code)
    read_end, write_end = os.pipe()
    async with cli("run", str(tmp_path / "plugins"), stdout=write_end) as run:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            seen = b""
            while b"ticker" not in seen or last_line not in seen:
                chunk = await asyncio.to_thread(reader.read1, 65536)
                assert chunk, seen.decode()
                seen += chunk
            pid = int(re.findall(rb"ready: runner ticker \(pid (\d+)\)", seen)[0])
        returncode, _, err = await run.finish()
    assert returncode == 141, err
    assert err == ""
    assert (tmp_path / "plugins" / "ticker" / "ticker_plugin.py.teardown").read_text() == "ran"
    assert not process_alive(pid)


def test_schema_into_a_closed_pipe_exits_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = isoplug("schema", str(FIXTURES / "configured"), stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


# -- log levels --------------------------------------------------------------------------------

LEVELS = """
    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            ctx.logger.debug("a debug record")
            ctx.logger.info("an info record")
            ctx.logger.error("last record")
"""


async def run_levels(tmp_path: Path, *options: str) -> str:
    directory = tmp_path / "plugins"
    if not directory.exists():
        write_plugin(directory, "quiet", LEVELS, 'log_level = "WARNING"\n')
        write_plugin(directory, "verbose", LEVELS, 'log_level = "DEBUG"\n')
    async with cli("run", str(directory), *options) as run:
        await run.until(r"quiet +error +last record")
        await run.until(r"verbose +error +last record")
        run.process.send_signal(signal.SIGINT)
        code, output, _ = await run.finish()
    assert code == 0, output
    return output


async def test_each_plugin_logs_at_its_manifests_level(tmp_path: Path) -> None:
    """Without options, a plugin's log_level rules: WARNING hides its INFO, DEBUG shows its
    DEBUG records (--log-level no longer overrides manifests)."""
    output = await run_levels(tmp_path)
    assert not re.search(r"quiet +(debug|info)", output), output
    assert re.search(r"verbose +debug +a debug record", output), output
    assert re.search(r"verbose +info +an info record", output), output


async def test_log_level_filters_the_console_and_plugin_log_level_the_runners(
    tmp_path: Path,
) -> None:
    output = await run_levels(tmp_path, "--log-level", "WARNING")
    assert not re.search(r"verbose +(debug|info)", output), output
    assert "isoplug       info" not in output
    output = await run_levels(tmp_path, "--plugin-log-level", "INFO")
    assert re.search(r"quiet +info +an info record", output), output
    assert not re.search(r"verbose +debug", output), output


# -- --config, --tui, demo ---------------------------------------------------------------------


async def test_config_messages_name_the_file(tmp_path: Path) -> None:
    """An unknown table names --config and its file; a bad value says it came from there."""
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("[configured]\ngreeting = 5\n[nosuch]\nx = 1\n")
    directory = plugins_dir(tmp_path, "configured")
    async with cli("run", "--config", str(overrides), str(directory)) as run:
        await run.until(
            rf"--config {re.escape(str(overrides))}: no plugin has the id of "
            r"table\(s\) \[nosuch\]"
        )
        # Its only plugin failed for good: the command ends on its own.
        code, output, errors = await run.finish()
    assert code == 1, output
    assert "plugin configured: failed" in output
    assert "every plugin failed for good (1)" in errors and "  configured: " in errors
    assert "plugin_config" not in output
    assert f"[configured] of --config {overrides} (greeting)" in output


def test_a_config_nested_past_the_limit_is_a_usage_error(tmp_path: Path) -> None:
    """As a manifest's [config] is: 70 levels is past the 64 a configuration may nest."""
    overrides = tmp_path / "deep.toml"
    overrides.write_text("[configured]\nx = " + "[" * 70 + "1" + "]" * 70 + "\n")
    result = isoplug("run", "--config", str(overrides), str(plugins_dir(tmp_path, "configured")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"isoplug run: --config {overrides}: configured.x[0][0][0][0][0][0]...: nests "
        "tables and arrays more than 64 levels deep\n"
    ), result.stderr


def test_tui_refuses_a_stdout_that_is_not_a_terminal() -> None:
    result = isoplug("run", "--tui", str(FIXTURES / "echo"))
    assert result.returncode == 2
    assert result.stdout == "" and "--tui needs a terminal" in result.stderr


def test_demo_checks_its_options(tmp_path: Path) -> None:
    result = isoplug("demo", "--plugins-dir", str(tmp_path / "missing"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    for duration in ("0", "-5", "nan"):
        result = isoplug("demo", "--duration", duration)
        assert result.returncode == 2 and "more than 0" in result.stderr, duration
    result = isoplug("demo", "--plugins-dir", str(tmp_path))
    assert result.returncode == 1 and "nothing to run" in result.stderr
    assert "What you saw" not in result.stdout


async def test_demo_whose_plugins_are_not_ready_in_time_says_which_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process, with real runners: a setup() that never returns outlasts the demo's wait
    (shortened here): no traceback, a message naming the plugin and its state, exit code 1."""
    from isoplug.cli.demo import run_demo_plugins

    write_plugin(tmp_path, "stuck", NEVER_READY)
    code = await run_demo_plugins(tmp_path, 1.0, asyncio.Event(), ready_within=1.0)
    error = capsys.readouterr().err
    assert code == 1, error
    assert "isoplug demo: plugins not ready within 1 s: stuck starting (restarts 0" in error
    assert "it waits 1 s for its plugins to be ready, and a runner whose setup() has not " in (
        error
    )
    assert "returned within 15 s (ready_timeout) is killed and started again" in error
    assert "Traceback" not in error


async def test_demo_not_ready_message_says_how_the_last_start_ended(tmp_path: Path) -> None:
    """A plugin restarted after a failed start, starting again when the demo gives up: the
    message quotes what the host knows of that failure (the runner's last stderr lines)."""
    from isoplug.cli.demo import not_ready
    from isoplug.host import Host, PluginState

    write_plugin(tmp_path, "flaky", CRASHES_THEN_NEVER_READY, "[restart]\nbackoff_initial = 0.1\n")
    async with Host(tmp_path) as host:
        await host.wait_for(
            "flaky", lambda i: i.restarts == 1 and i.state is PluginState.STARTING, timeout=60
        )
        message = not_ready("plugins not ready within 5 s: flaky starting", host.plugins(), 5, 15)
    assert message.startswith("plugins not ready within 5 s: flaky starting\n"), message
    assert "\n  flaky, its last start: " in message, message
    assert "exited with code 3" in message and "cache warm-up: disk full" in message, message


async def test_a_repeat_within_the_window_is_the_same_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, with real signals: a repeat inside REPEAT_WINDOW only logs; one past it
    cancels the body (130). The window is widened, then closed, so no timing decides."""
    from isoplug.cli import signals

    monkeypatch.setattr(signals, "REPEAT_WINDOW", 3600.0)
    stopped = asyncio.Event()

    async def body(stop: asyncio.Event) -> int:
        await stop.wait()
        stopped.set()
        await asyncio.Event().wait()  # until cancelled by a second request
        return 0

    caplog.set_level(logging.INFO, "isoplug.cli")
    task = asyncio.create_task(signals._with_signals(body))
    await eventually(lambda: signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGHUP)
    await stopped.wait()
    os.kill(os.getpid(), signal.SIGINT)
    await eventually(lambda: "the same request" in caplog.text)
    assert not task.done()
    monkeypatch.setattr(signals, "REPEAT_WINDOW", 0.0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 30) == 130
    assert "SIGTERM again: killing every runner now" in caplog.text
