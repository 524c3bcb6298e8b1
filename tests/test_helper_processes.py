"""The short-lived processes the host runs to ask one thing (the check of a plugin's own
interpreter, the check of a configuration in a process of its own): they answer, or fail,
within their deadline, a cancel ends them at once, and nothing they started outlives them,
even what holds their pipes. Real hosts, real scripts, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from isoplug import Host, PluginFailed, PluginState
from isoplug.host.config_check import check_in_process
from isoplug.host.descendants import read_stat
from isoplug.host.manifest import load_manifest
from isoplug.host.schema import plugin_toml_schema
from isoplug.testing import FAST, eventually
from tests.record_waiter import watching

#: Every test's own bound: a regression fails it instead of hanging the run.
TEST_BOUND = 60.0
#: The deadline of a config check that never finishes: what the plugin's import starts must
#: be started before it, which takes the check under 0.1 s (on a loaded 2-core machine).
DEADLINE = 1.5


def gone(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is None or stat.gone


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def write_plugin(plugins: Path, plugin_id: str, extra: str = "", module: str = "") -> Path:
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    (folder / f"{plugin_id}_plugin.py").write_text(
        module or "import isoplug\n\nclass Plugin(isoplug.Plugin):\n    pass\n"
    )
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{plugin_id}_plugin:Plugin"\n{extra}\n'
    )
    return folder


def kill_leftovers(path: Path) -> None:
    """A failed test's cleanup: what the code under test left running is not left to init."""
    for pid in pids(path):
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def hanging_interpreter(tmp_path: Path) -> tuple[Path, Path]:
    """A ``python`` that never answers: its child holds its pipes (and writes its pid)."""
    started = tmp_path / "started"
    return script(tmp_path / "hang.sh", f'sleep 300 &\necho $! >> "{started}"\nwait\n'), started


async def test_an_interpreter_that_never_answers_fails_its_plugin_at_its_deadline(
    tmp_path: Path,
) -> None:
    hang, started = hanging_interpreter(tmp_path)
    write_plugin(tmp_path / "plugins", "hanger", f'python = "{hang}"')
    # The script's child is started at once: a short deadline is long enough for it.
    config = dataclasses.replace(FAST, ready_timeout=1.0)
    async with asyncio.timeout(TEST_BOUND), Host(tmp_path / "plugins", config=config) as host:
        with pytest.raises(PluginFailed):
            await host.wait_ready(TEST_BOUND / 2)
        info = host.plugin("hanger")
        assert info.state is PluginState.FAILED
        assert info.restarts == 0
        assert info.error is not None
        assert f"plugin 'hanger': its python {hang} did not answer within 1 s" in info.error
        # What the interpreter started went with it.
        [child] = pids(started)
        await eventually(lambda: gone(child))


def untagged_escaper(started: Path) -> str:
    """Shell lines starting a child that leaves the session and drops its whole environment
    (the tag with it), then writes its pid: only the helper's recorded tree can name it."""
    env, setsid, sh, sleep = (shutil.which(name) for name in ("env", "setsid", "sh", "sleep"))
    assert env and setsid and sh and sleep
    return f"{env} -i {setsid} {sh} -c 'echo $$ >> \"{started}\"; exec {sleep} 300' &\n"


async def test_an_interpreter_check_ends_a_child_that_left_its_session_and_dropped_its_tag(
    tmp_path: Path,
) -> None:
    started = tmp_path / "started"
    hang = script(tmp_path / "hang.sh", untagged_escaper(started) + "sleep 300 &\nwait\n")
    write_plugin(tmp_path / "plugins", "escaper", f'python = "{hang}"')
    # The script starts the escaper at once (no Python to import): a short deadline will do.
    config = dataclasses.replace(FAST, ready_timeout=1.0)
    try:
        async with asyncio.timeout(TEST_BOUND), Host(tmp_path / "plugins", config=config) as host:
            with pytest.raises(PluginFailed):
                await host.wait_ready(TEST_BOUND / 2)
            error = host.plugin("escaper").error
            assert error is not None
            assert "it was stopped, with the processes it started that could be found" in error
            [child] = pids(started)
            await eventually(lambda: gone(child))
    finally:
        kill_leftovers(started)


async def test_closing_the_host_during_an_interpreter_check_ends_it_at_once(
    tmp_path: Path,
) -> None:
    """One plugin's hanging check does not hold the host's close (nor the other plugins')."""
    hang, started = hanging_interpreter(tmp_path)
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "hanger", f'python = "{hang}"')
    write_plugin(plugins, "good")
    config = dataclasses.replace(FAST, ready_timeout=TEST_BOUND * 2)
    async with asyncio.timeout(TEST_BOUND):
        host = Host(plugins, config=config)
        try:
            await host.start()
            await eventually(lambda: bool(pids(started)))
            await eventually(lambda: host.plugin("good").state is PluginState.READY)
            assert host.plugin("hanger").state is PluginState.STARTING
        finally:
            await host.aclose()
        assert host.plugin("good").state is PluginState.STOPPED
        [child] = pids(started)
        await eventually(lambda: gone(child))


async def test_a_wrapper_that_leaves_a_helper_running_passes_the_check(tmp_path: Path) -> None:
    """The wrapper execs the interpreter (as it must) after starting a background helper that
    keeps stdout open: the check's answer line is the answer. The check's own helper is
    ended with the check; the runner's, with the runner: at once (not after the wait for its
    output to end, which that helper would hold), and said as its interpreter's, not its
    plugins'."""
    helpers = tmp_path / "helpers"
    wrapper = script(
        tmp_path / "wrap.sh",
        f'sleep 300 &\necho $! >> "{helpers}"\nexec "{sys.executable}" "$@"\n',
    )
    write_plugin(tmp_path / "plugins", "wrapped", f'python = "{wrapper}"')
    config = dataclasses.replace(FAST, ready_timeout=10.0)
    try:
        with watching("isoplug.host") as waiter:
            async with asyncio.timeout(TEST_BOUND):
                async with Host(tmp_path / "plugins", config=config) as host:
                    await host.wait_ready(TEST_BOUND / 2)
                    checks, runners = pids(helpers)  # one per start of the wrapper
                    await eventually(lambda: gone(checks))
                    assert not gone(runners)
                await eventually(lambda: gone(runners))
                report = await waiter.wait_for("isoplug.host", "outlived it")
        assert report.getMessage() == (
            "runner wrapped: processes its interpreter command started (before the runner's "
            "own code ran, not its plugins) outlived it; killed them: 1 process "
            f"(pid {runners})"
        )  # and nothing of its output held open: it was ended before that wait
    finally:
        kill_leftovers(helpers)


#: A plugin whose import leaves a process of its own session behind, holding every descriptor
#: the import had (the checker's private answer pipe too), and says where it is.
FORKS_A_HOLDER = """
import os, sys, time
import isoplug

child = os.fork()
if child == 0:
    os.setsid()
    time.sleep(300)
    os._exit(0)
with open({pids!r}, "a") as f:
    f.write("%d\\n" % child)
{then}

class Plugin(isoplug.Plugin):
    pass
"""


async def test_a_config_check_answers_when_the_plugins_import_leaves_its_pipe_held(
    tmp_path: Path,
) -> None:
    holders = tmp_path / "holders"
    folder = write_plugin(
        tmp_path, "holder", module=FORKS_A_HOLDER.format(pids=str(holders), then="")
    )
    async with asyncio.timeout(TEST_BOUND):
        # Well within its deadline: the answer and the checker's exit are enough.
        assert await check_in_process(load_manifest(folder), [], TEST_BOUND * 2) is None
        [holder] = pids(holders)
        await eventually(lambda: gone(holder))


async def test_a_cancelled_config_check_ends_at_once_with_what_it_started(
    tmp_path: Path,
) -> None:
    holders = tmp_path / "holders"
    folder = write_plugin(
        tmp_path,
        "stuck",
        module=FORKS_A_HOLDER.format(pids=str(holders), then="time.sleep(300)"),
    )
    async with asyncio.timeout(TEST_BOUND):
        check = asyncio.ensure_future(check_in_process(load_manifest(folder), [], TEST_BOUND * 2))
        await eventually(lambda: bool(pids(holders)))
        check.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check
        [holder] = pids(holders)
        await eventually(lambda: gone(holder))


async def test_a_config_check_past_its_deadline_says_so_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    holders = tmp_path / "holders"
    folder = write_plugin(
        tmp_path,
        "stuck",
        module=FORKS_A_HOLDER.format(pids=str(holders), then="time.sleep(300)"),
    )
    async with asyncio.timeout(TEST_BOUND):
        why = await check_in_process(load_manifest(folder), [], DEADLINE)
        assert why == "importing plugin 'stuck' to check it did not finish within 1.5 s"
        [holder] = pids(holders)
        await eventually(lambda: gone(holder))


#: A plugin whose import starts a process that leaves its session and drops its environment
#: (the tag with it), then hangs: the checker's recorded tree is all that names it.
STARTS_AN_UNTAGGED_ESCAPER = """
import os, sys, time
import isoplug

child = os.fork()
if child == 0:
    os.setsid()
    with open({pids!r}, "a") as f:
        f.write("%d\\n" % os.getpid())
    os.execve({sleep!r}, ["sleep", "300"], {{}})
while not os.path.exists({pids!r}):
    time.sleep(0.01)
time.sleep(300)
"""


async def test_a_config_check_past_its_deadline_ends_a_child_that_dropped_its_tag(
    tmp_path: Path,
) -> None:
    escapers = tmp_path / "escapers"
    sleep = shutil.which("sleep")
    assert sleep
    folder = write_plugin(
        tmp_path,
        "escaper",
        module=STARTS_AN_UNTAGGED_ESCAPER.format(pids=str(escapers), sleep=sleep),
    )
    try:
        async with asyncio.timeout(TEST_BOUND):
            why = await check_in_process(load_manifest(folder), [], DEADLINE)
            assert why == "importing plugin 'escaper' to check it did not finish within 1.5 s"
            [child] = pids(escapers)
            await eventually(lambda: gone(child))
    finally:
        kill_leftovers(escapers)


async def test_isoplug_schema_answers_when_the_plugins_import_leaves_its_pipe_held(
    tmp_path: Path,
) -> None:
    """``isoplug schema``'s import answered and exited: that is the answer, though a process
    its import forked holds the pipe. The command ends then, not at its deadline (twice this
    test's bound), and the holder with it."""
    holders = tmp_path / "holders"
    folder = write_plugin(
        tmp_path, "holder", module=FORKS_A_HOLDER.format(pids=str(holders), then="")
    )
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "isoplug",
                "schema",
                "--timeout",
                str(TEST_BOUND * 2),
                str(folder),
            ],
            capture_output=True,
            text=True,
            timeout=TEST_BOUND,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["$ref"]
        [holder] = pids(holders)
        await eventually(lambda: gone(holder))
        # From a thread that runs an event loop: the import's loop runs in a thread of its own.
        assert plugin_toml_schema(load_manifest(folder), timeout=TEST_BOUND * 2)["$ref"]
        _, second = pids(holders)
        await eventually(lambda: gone(second))
    finally:
        kill_leftovers(holders)


async def test_what_a_config_check_said_stays_quoted(tmp_path: Path) -> None:
    """A plugin that cannot be imported says why in its exception: host-like words, its own
    double quotes and backslashes stay inside one quote the host closes."""
    folder = write_plugin(
        tmp_path,
        "posing",
        module=(
            "raise RuntimeError("
            "'x); it was checked: the host ran out of memory \"ok\" \\\\ \\x1b[2J')\n"
        ),
    )
    async with asyncio.timeout(TEST_BOUND):
        why = await check_in_process(load_manifest(folder), [], TEST_BOUND)
    assert why is not None
    lead = "it cannot be imported, the process checking it said: "
    assert why.startswith(lead + '"'), why
    assert why.endswith('"'), why
    inside = why[len(lead) + 1 : -1]
    # Every double quote inside is escaped: none closes the quote early.
    assert all(inside[i - 1] == "\\" for i, c in enumerate(inside) if c == '"'), why
    assert 'the host ran out of memory \\"ok\\" \\\\ \\\\x1b[2J' in inside, why
    assert "\x1b" not in why


async def test_a_config_check_reads_a_large_configuration_no_other_process_can_open(
    tmp_path: Path,
) -> None:
    """The configuration a check is asked about reaches it whole however large (past a
    socket's buffer), on a stdin that no other process of the user can open through
    ``/proc/<pid>/fd/0`` (the kernel refuses that on a socket; a file or a pipe there would
    give the configuration to anyone who asks). The plugin's import opens its own, as another
    process would: the kernel's check is the same."""
    opened = tmp_path / "opened"
    module = textwrap.dedent(
        f"""
        import os
        import isoplug
        import msgspec
        try:
            with open(f"/proc/{{os.getpid()}}/fd/0", "rb") as stdin:
                found = f"read {{len(stdin.read())}} bytes"
        except OSError as exc:
            found = f"refused: {{exc.errno}}"
        with open({str(opened)!r}, "w") as out:
            out.write(found)

        class Settings(msgspec.Struct, forbid_unknown_fields=True):
            secret: str

        class Plugin(isoplug.Plugin):
            config_schema = Settings
        """
    )
    folder = write_plugin(tmp_path, "large", '[config]\nsecret = "s"', module)
    # Past plugin.toml's limit: as a host's configuration overrides give it.
    manifest = dataclasses.replace(load_manifest(folder), config={"secret": "s" * (2 << 20)})
    async with asyncio.timeout(TEST_BOUND):
        assert await check_in_process(manifest, [], TEST_BOUND) is None
    assert opened.read_text() == f"refused: {errno.ENXIO}"
