"""Signals at the moments of a command that timing rarely picks, each held there by
tests/paused_cli_child.py: while the command still imports itself (about a second on a
loaded machine), and ``isoplug demo --protocol`` once its runner is connected, Ctrl-C sent
to the terminal's whole process group."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from isoplug.testing import eventually
from tests.plugins_fixtures import plugins_dir
from tests.test_cli_exits import ENV, Cli

ROOT = Path(__file__).parent.parent


class Paused(Cli):
    """A command paused by tests/paused_cli_child.py: :meth:`until_paused`, then
    :meth:`go`."""

    def __init__(self, process: asyncio.subprocess.Process, paused: Path, go: Path) -> None:
        super().__init__(process)
        self._paused = paused
        self._go = go

    async def until_paused(self) -> None:
        await eventually(self._paused.exists, timeout=60)

    def go(self) -> None:
        self._go.touch()


@asynccontextmanager
async def paused_cli(
    tmp_path: Path, point: str, *arguments: str, **options: Any
) -> AsyncIterator[Paused]:
    """``isoplug ARGUMENTS``, to be paused at ``point`` (see tests/paused_cli_child.py);
    ``options``: more of ``create_subprocess_exec``'s. Killed if the test ends before it."""
    paused, go = tmp_path / "paused", tmp_path / "go"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.paused_cli_child",
        point,
        str(paused),
        str(go),
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
        **options,
    )
    try:
        yield Paused(process, paused, go)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


@pytest.mark.parametrize(
    ("command", "stop"),
    [
        ("run", signal.SIGTERM),
        ("run", signal.SIGHUP),
        ("run", signal.SIGQUIT),
        ("run", signal.SIGINT),
        ("demo", signal.SIGTERM),
    ],
)
async def test_a_stop_signal_while_importing_ends_the_command_cleanly(
    tmp_path: Path, command: str, stop: signal.Signals
) -> None:
    """A stop signal before the host started: never death by the signal (143, 129, a core
    dump) nor a traceback; said as a stop is, no plugin started, exit code 0 (a stop on
    request)."""
    directory = str(plugins_dir(tmp_path, "echo"))
    where = [directory] if command == "run" else ["--plugins-dir", directory]
    async with paused_cli(tmp_path, "importing", command, *where) as run:
        await run.until_paused()
        run.process.send_signal(stop)
        run.go()
        code, output, errors = await run.finish()
    assert code == 0, f"{code}:\n{output}{errors}"
    assert f"{stop.name}: stopping before any plugin started" in output, output
    assert "starting runner" not in output and "Traceback" not in output + errors, output
    assert errors == "", errors


async def test_sigusr1_while_importing_is_said_and_ignored(tmp_path: Path) -> None:
    async with paused_cli(tmp_path, "importing", "run", str(plugins_dir(tmp_path, "echo"))) as run:
        await run.until_paused()
        run.process.send_signal(signal.SIGUSR1)
        run.go()
        await run.until(r"SIGUSR1: ignored")
        await run.until(r"plugin echo: ready")
        run.process.send_signal(signal.SIGTERM)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    assert "echo: teardown ran" in output


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
@pytest.mark.parametrize("command", ["new", "schema"])
async def test_new_and_schema_take_a_stop_signal_while_importing_as_ctrl_c(
    tmp_path: Path, command: str, stop: signal.Signals
) -> None:
    """Quiet, exit code 130, as a Ctrl-C then; ``new`` makes nothing."""
    target = tmp_path / "weather" if command == "new" else plugins_dir(tmp_path, "echo") / "echo"
    async with paused_cli(tmp_path, "importing", command, str(target)) as run:
        await run.until_paused()
        run.process.send_signal(stop)
        run.go()
        code, output, errors = await run.finish()
    assert (code, output, errors) == (130, "", "")
    assert command != "new" or not target.exists()


async def test_ctrl_c_to_the_protocol_demos_group_reaches_its_host_alone(tmp_path: Path) -> None:
    """``isoplug demo --protocol`` at a terminal, Ctrl-C (SIGINT to its whole process group)
    once its runner is connected: the runner, in a group of its own, is ended by its host,
    which stops as on request: exit code 0, no traceback of either."""
    async with paused_cli(
        tmp_path, "protocol-connected", "demo", "--protocol", start_new_session=True
    ) as demo:
        runner = int((await demo.until(r"runner pid (\d+) connected"))[1])
        await demo.until_paused()
        os.killpg(demo.process.pid, signal.SIGINT)
        demo.go()
        code, output, errors = await demo.finish()
    assert code == 0, output + errors
    assert "Traceback" not in output + errors, output + errors
    assert "SIGINT: stopping" in output and "host: stopped on request" in output, output
    assert not Path(f"/proc/{runner}").exists(), "the runner outlived its host"
