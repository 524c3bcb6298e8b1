"""A ``teardown()`` that does not finish within ``teardown_timeout`` is named with the line of
the plugin's code it is at, as a ``setup()`` not ready in time is, and does not hold the
runner past that timeout: one that awaits is cancelled and the stop goes on; one that blocks
the event loop (a plain ``def`` teardown runs on the loop, as docs/plugins.md says) is ended
with its runner by a thread of the runner. The host's own deadlines here are far longer, so
only the runner's own doing ends it in time."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from isoplug import Host, PluginState
from tests.plugins_fixtures import SHORT_TEARDOWN
from tests.record_waiter import RecordWaiter, watching
from tests.test_plugin_definitions import write_plugin

SLEEPS_IN_PLAIN_TEARDOWN = """
async def setup(self, ctx):
    pass

def teardown(self):
    import time
    time.sleep(3600)  # a database close that never returns
"""

SLEEPS_IN_ASYNC_TEARDOWN = """
async def setup(self, ctx):
    pass

async def teardown(self):
    import time
    time.sleep(3600)  # a blocking call in an async hook: the loop cannot time it out
"""

AWAITS_IN_TEARDOWN = """
async def setup(self, ctx):
    pass

async def teardown(self):
    import asyncio, logging
    try:
        await asyncio.Event().wait()  # a goodbye the peer never acknowledges
    except asyncio.CancelledError:
        logging.getLogger("plugin.awaiting").warning("teardown cancelled")
        raise
"""


def _line_of(plugins: Path, plugin_id: str, text: str) -> int:
    lines = (plugins / plugin_id / f"{plugin_id}_plugin.py").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize(
    ("plugin_id", "body"),
    [("plain", SLEEPS_IN_PLAIN_TEARDOWN), ("blocking", SLEEPS_IN_ASYNC_TEARDOWN)],
)
async def test_a_teardown_blocking_the_event_loop_ends_at_the_timeout_naming_its_line(
    tmp_path: Path, plugin_id: str, body: str
) -> None:
    """It used to hold the runner until the host's SIGTERM (``shutdown_timeout`` after the
    request), which said only "did not exit within 5.0 s": neither teardown nor where."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, plugin_id, body)
    with watching("plugin") as records:
        async with Host(plugins, config=SHORT_TEARDOWN) as host:
            await host.wait_ready(20)
            info = await host.stop(plugin_id)
    assert info.state is PluginState.STOPPED
    assert info.last_exit is not None
    # Exited on its own, not signalled by the host (its SIGTERM would come 30 s later).
    assert info.last_exit.exit_code == 0, info.last_exit.describe()
    (record,) = records.select(plugin=plugin_id, text="teardown() did not finish")
    assert record.levelno == logging.ERROR
    assert record.name == f"plugin.{plugin_id}.isoplug.runner"
    line = _line_of(plugins, plugin_id, "time.sleep(3600)")
    assert re.search(
        rf"^plugin '{plugin_id}': teardown\(\) did not finish within 0\.5 s, blocking the "
        rf"runner's event loop at \S+/{plugin_id}_plugin\.py:{line} in teardown ",
        record.getMessage(),
    ), record.getMessage()


async def test_a_teardown_awaiting_past_the_timeout_is_named_and_cancelled(
    tmp_path: Path,
) -> None:
    """It used to say only "cancelled calls and teardown hooks did not finish within 0.5 s"."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "awaiting", AWAITS_IN_TEARDOWN)
    with watching("plugin") as records:
        async with Host(plugins, config=SHORT_TEARDOWN) as host:
            await host.wait_ready(20)
            info = await host.stop("awaiting")
    assert info.last_exit is not None
    assert info.last_exit.exit_code == 0, info.last_exit.describe()
    (record,) = records.select(plugin="awaiting", text="teardown() did not finish")
    assert record.levelno == logging.ERROR
    line = _line_of(plugins, "awaiting", "asyncio.Event().wait()")
    assert re.search(
        rf"^plugin 'awaiting': teardown\(\) did not finish within 0\.5 s, waiting at "
        rf"\S+/awaiting_plugin\.py:{line} in teardown ",
        record.getMessage(),
    ), record.getMessage()
    # Cancelled while forwarding still works: what it logs as it ends arrives.
    assert records.select(plugin="awaiting", text="teardown cancelled")


FLUSHES_IN_TEARDOWN = """
async def setup(self, ctx):
    self.ctx = ctx

async def teardown(self):
    self.ctx.logger.info("flushed")
"""


async def _stop_group(tmp_path: Path, members: dict[str, str]) -> RecordWaiter:
    """Run ``members`` (id: body) as group g and stop it; the plugins' records. The runner
    exits on its own (code 0) whatever the teardowns do."""
    plugins = tmp_path / "plugins"
    for plugin_id, body in members.items():
        write_plugin(plugins, plugin_id, body, group="g")
    with watching("plugin") as records:
        async with Host(plugins, config=SHORT_TEARDOWN) as host:
            await host.wait_ready(20)
            info = await host.stop(next(iter(members)))
    assert info.last_exit is not None
    assert info.last_exit.exit_code == 0, info.last_exit.describe()
    return records


async def test_a_group_members_awaiting_teardown_leaves_the_others_theirs(
    tmp_path: Path,
) -> None:
    """Group {a_stuck, b_flush}: a_stuck's teardown awaits forever. The members' teardowns ran
    one after another under the one deadline, so b_flush's was "not run: the teardown timeout
    had passed" (alone, it ran); now they run together and only a_stuck's is cancelled."""
    records = await _stop_group(
        tmp_path, {"a_stuck": AWAITS_IN_TEARDOWN, "b_flush": FLUSHES_IN_TEARDOWN}
    )
    assert records.select(plugin="b_flush", text="flushed")
    assert not records.select(text="not run")
    (record,) = records.select(plugin="a_stuck", text="teardown() did not finish")
    assert record.name == "plugin.a_stuck.isoplug.runner"
    assert records.select(text="teardown cancelled")


async def test_a_group_members_blocking_teardown_is_named_as_its_own(tmp_path: Path) -> None:
    """The teardowns run in tasks of their own: the watch still finds which member's blocks
    the loop, and names that one (the runner exits without the rest, as documented)."""
    records = await _stop_group(
        tmp_path, {"a_flush": FLUSHES_IN_TEARDOWN, "b_block": SLEEPS_IN_PLAIN_TEARDOWN}
    )
    (record,) = records.select(text="teardown() did not finish")
    assert record.name == "plugin.b_block.isoplug.runner"
    assert "blocking the runner's event loop at " in record.getMessage()
    assert records.select(plugin="a_flush", text="flushed")
