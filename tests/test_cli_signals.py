"""`isoplug run`'s signals at the moments timing rarely picks: a repeat of the stop signal
after every plugin stopped (the command paused there by tests/paused_cli_child.py), and the
signals besides SIGINT, SIGTERM and SIGHUP that an operator or an init sends (SIGQUIT,
SIGUSR1, SIGUSR2)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.plugins_fixtures import plugins_dir
from tests.test_cli_early_signals import paused_cli
from tests.test_cli_exits import ENV, cli


@pytest.mark.parametrize("point", ["before-finish", "at-exit"])
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
async def test_a_repeat_after_every_plugin_stopped_never_kills_the_command(
    tmp_path: Path, point: str, second: signal.Signals
) -> None:
    """The second signal lands after the host stopped, before the process ends: never death
    by the signal nor a KeyboardInterrupt traceback. Within the repeat window it is the same
    request (0); later, with the plugins stopped, it ends what is left (130) until the exit
    code is decided, and is ignored after that."""
    async with paused_cli(tmp_path, point, "run", str(plugins_dir(tmp_path, "echo"))) as run:
        await run.until(r"plugin echo: ready")
        run.process.send_signal(signal.SIGINT)
        await run.until_paused()
        run.process.send_signal(second)
        run.go()
        code, output, errors = await run.finish()
    assert code >= 0, f"killed by {signal.Signals(-code).name}:\n{output}{errors}"
    assert "Traceback" not in output + errors, output + errors
    assert "all plugins stopped" in output and "echo: teardown ran" in output
    if point == "at-exit" or "the same request" in output:
        assert code == 0, output
    else:
        assert code == 130, output
        assert f"{second.name}: every plugin has stopped; exiting now" in output


async def test_sigquit_stops_every_plugin_cleanly(tmp_path: Path) -> None:
    """Ctrl-\\ (SIGQUIT) stops as SIGTERM does: teardown runs, rc 0, no core dump."""
    async with cli("run", str(plugins_dir(tmp_path, "echo"))) as run:
        await run.until(r"plugin echo: ready")
        run.process.send_signal(signal.SIGQUIT)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    assert "SIGQUIT: stopping every plugin" in output and "echo: teardown ran" in output


@pytest.mark.parametrize("ignored", [signal.SIGUSR1, signal.SIGUSR2])
async def test_sigusr_is_said_and_ignored(tmp_path: Path, ignored: signal.Signals) -> None:
    """SIGUSR1/SIGUSR2 neither kill the command nor stop its plugins: said at INFO."""
    async with cli("run", str(plugins_dir(tmp_path, "echo"))) as run:
        await run.until(r"plugin echo: ready")
        run.process.send_signal(ignored)
        await run.until(rf"{ignored.name}: ignored")
        run.process.send_signal(signal.SIGINT)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    assert "echo: teardown ran" in output


_IN_PROCESS = """
import signal, sys
import isoplug.cli
held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
before = [signal.getsignal(s) for s in held]
code = isoplug.cli.main(["demo", "--duration", "0.5", "--plugins-dir", sys.argv[1]])
after = [signal.getsignal(s) for s in held]
print("code", code, "signals as before" if after == before else f"changed: {after}")
"""


async def test_a_command_run_in_process_gives_the_signals_back(tmp_path: Path) -> None:
    """``isoplug.cli.main()`` called by a program (a test of its own) leaves the stop signals
    as it found them: ignoring them at the end is for the console script's process alone,
    whose children would otherwise start with them ignored."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _IN_PROCESS,
        str(plugins_dir(tmp_path, "echo")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    output, errors = await asyncio.wait_for(process.communicate(), 120)
    assert output.decode().splitlines()[-1] == "code 0 signals as before", output + errors
