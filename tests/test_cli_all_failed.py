"""`isoplug run` once every plugin has failed for good: it ends on its own (code 1), naming each
plugin and why, leaving no process behind; while one plugin runs, or under --reload (a saved
fix restarts a failed plugin), it runs on until stopped."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from tests.plugins_fixtures import process_alive
from tests.test_cli_exits import cli, write_plugin

#: Give up after the second crash within the window, retrying at once.
TINY_BUDGET = """
[restart]
max_restarts = 1
backoff_initial = 0.01
backoff_max = 0.01
"""

#: Says which process it runs in (and that process's parent: the zygote that forked it, when
#: one did), then crashes in setup() with a terminal escape in its message.
CRASHER = """
    import os

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            print(f"started: pid {os.getpid()} parent {os.getppid()}", flush=True)
            raise RuntimeError("database \\x1b[2J unreachable")
"""

#: Cannot be imported: failed for good at once, without a crash loop.
BROKEN = """
    import os

    print(f"started: pid {os.getpid()} parent {os.getppid()}", flush=True)
    raise ImportError("this plugin needs libfoo 2.0")
"""

HEALTHY = """
    import isoplug


    class P(isoplug.Plugin):
        pass
"""

TICKER = """
    import asyncio

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            self.task = asyncio.create_task(self.tick())

        async def tick(self) -> None:
            n = 0
            while True:
                n += 1
                print(f"tick {n}", flush=True)
                await asyncio.sleep(0.05)

        async def teardown(self) -> None:
            self.task.cancel()
            print("teardown ran", flush=True)
"""


async def test_run_ends_once_every_plugin_failed_for_good(tmp_path: Path) -> None:
    """A crash loop, an import error, and a group whose runner crashes in one member's setup:
    nothing can run, so the command ends by itself with code 1, says why each plugin failed
    (sanitized) on stderr, and leaves no runner (nor zygote) behind."""
    directory = tmp_path / "plugins"
    write_plugin(directory, "crasher", CRASHER, TINY_BUDGET)
    write_plugin(directory, "broken", BROKEN)
    write_plugin(
        directory, "ga", CRASHER.replace("database", "ga's"), 'group = "duo"' + TINY_BUDGET
    )
    write_plugin(directory, "gb", HEALTHY, 'group = "duo"' + TINY_BUDGET)
    async with cli("run", str(directory)) as run:
        # No signal: it has to end on its own (cli() gives up after 60 s).
        code, output, errors = await run.finish()
        cli_pid = run.process.pid
    assert code == 1, output + errors
    assert "stopping every plugin" not in output
    assert "exit code 1: failed: broken, crasher, ga, gb" in output
    assert "every plugin failed for good (4)" in errors, errors
    said = dict(re.findall(r"^  (\w+): (.*)$", errors, re.MULTILINE))
    assert set(said) == {"broken", "crasher", "ga", "gb"}, errors
    assert "this plugin needs libfoo 2.0" in said["broken"]
    assert "crash loop" in said["crasher"]
    # The plugin's own text, sanitized: its escape shown, not sent to the terminal.
    assert "database \\x1b[2J unreachable" in said["crasher"]
    assert "\x1b" not in errors
    assert "ga's \\x1b[2J unreachable" in said["ga"] and "runner duo" in said["ga"]
    assert said["gb"] == said["ga"]
    started = re.findall(r"started: pid (\d+) parent (\d+)", output)
    assert len(started) >= 5, output  # crasher and duo twice each, broken once
    accounted = re.findall(r"\(pid (\d+)\)", output)
    pids = {int(p) for pair in started for p in pair} | {int(p) for p in accounted}
    left = [pid for pid in pids - {cli_pid, 1} if process_alive(pid)]
    assert not left, f"processes left behind: {left}\n{output}"


async def test_run_goes_on_while_one_plugin_runs(tmp_path: Path) -> None:
    """One plugin failed for good, another runs (beside a plugin of its group that cannot be
    imported): the command runs on; stopped, its code is 1."""
    directory = tmp_path / "plugins"
    write_plugin(directory, "crasher", CRASHER, TINY_BUDGET)
    write_plugin(directory, "ticker", TICKER, 'group = "ticking"')
    write_plugin(directory, "broken", BROKEN, 'group = "ticking"')
    async with cli("run", str(directory)) as run:
        await run.until(r"plugin broken: cannot be loaded")
        await run.until(r"plugin crasher: failed")
        # A tick printed after the failure was taken: the run went on past it.
        ticks = [int(n) for n in re.findall(r"ticker +stdout +tick (\d+)", "".join(run.lines))]
        await run.until(rf"ticker +stdout +tick {max(ticks, default=0) + 1}\b")
        run.process.send_signal(signal.SIGINT)
        code, output, errors = await run.finish()
    assert code == 1, output + errors
    assert "SIGINT: stopping every plugin" in output
    assert re.search(r"ticker +stdout +teardown ran", output), output
    assert "exit code 1: failed: broken, crasher" in output
    assert "failed for good" not in errors, errors


async def test_run_with_reload_goes_on_when_every_plugin_failed(tmp_path: Path) -> None:
    """--reload: a saved fix restarts a failed plugin, so the session runs on; the fix runs."""
    directory = tmp_path / "plugins"
    write_plugin(directory, "crasher", CRASHER, TINY_BUDGET)
    async with cli("run", "--reload", str(directory)) as run:
        await run.until(r"reload: watching")
        await run.until(r"plugin crasher: failed")
        (directory / "crasher" / "crasher_plugin.py").write_text(
            "import isoplug\n\n\nclass P(isoplug.Plugin):\n    pass\n"
        )
        await run.until(r"plugin crasher: ready")
        run.process.send_signal(signal.SIGINT)
        code, output, errors = await run.finish()
    # Fixed before the end: the session ends well.
    assert code == 0, output + errors
    assert "failed for good" not in errors, errors
