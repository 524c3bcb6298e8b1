"""In a group runner, a record belongs to the plugin whose code logged it, on whatever logger
that code named: as if that plugin ran alone. What no plugin's code can be known for stays
the group's, and no name a member logs on makes a record another runner's or the host's."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from isoplug import Host
from isoplug.logs import LogReceiver
from isoplug.logs.source_names import SourceNamingHandler
from isoplug.logs.sources import current_source
from tests.plugins_fixtures import FAST, copy_plugins, running
from tests.record_waiter import RecordWaiter, attached, watching
from tests.test_plugin_definitions import write_plugin

#: Where log_everywhere, log_in_worker and the chat event log.
PLACES = (
    "in a call",
    "in a task",
    "in to_thread",
    "in a bare thread",
    "in run_in_executor",
    "in its own executor",
    "in a worker thread",
    "in an event",
)


def stamped(record: logging.LogRecord) -> object:
    return record.__dict__.get("plugin_id")


async def log_everywhere(host: Host, waiter: RecordWaiter, plugin: str) -> None:
    """Have ``plugin`` log everywhere it can; return once every record of its has arrived."""
    await host.call(plugin, "log_everywhere")
    await host.call(plugin, "log_in_worker")
    for place in ("a bare thread", "its own executor", "a worker thread"):
        await waiter.wait_for_record(text=f"{plugin} logged in {place}")


def seen(waiter: RecordWaiter, plugin: str) -> set[tuple[str, object, str]]:
    """(host logger, plugin_id, message) of every record ``plugin``'s code logged."""
    return {
        (r.name, stamped(r), r.getMessage())
        for r in waiter.records
        if r.getMessage().startswith(f"{plugin} logged") or r.getMessage() == f"{plugin} set up"
    }


async def test_a_members_own_loggers_arrive_as_if_it_ran_alone(tmp_path: Path) -> None:
    """duo_a's module logger, the root logger and a shared library's, in a call, a task, a
    to_thread, a thread it started, run_in_executor, an executor of its own, a worker thread,
    an event handler and setup: the same host loggers and plugin_id in its group as alone;
    teardown's too."""
    alone = copy_plugins(tmp_path / "alone", "duo_a")
    manifest = alone / "duo_a" / "plugin.toml"
    manifest.write_text(manifest.read_text().replace('group = "duo"\n', ""))
    with watching("plugin") as waiter:
        async with Host(alone, config=FAST) as host:
            await host.wait_ready(20)
            await log_everywhere(host, waiter, "duo_a")
            await host.publish("chat", "hello")
            await waiter.wait_for_record(text="duo_a logged in an event")
    by_itself = seen(waiter, "duo_a")
    module = "plugin.duo_a.duo_a_plugin"
    assert (module, "duo_a", "duo_a logged in a bare thread") in by_itself
    assert (module, "duo_a", "duo_a set up") in by_itself
    assert waiter.matching(module, "duo_a torn down")

    (tmp_path / "group").mkdir()
    async with running(tmp_path / "group", "duo_a", "duo_b") as (host, waiter):
        assert host.plugin("duo_a").pid == host.plugin("duo_b").pid
        for plugin in ("duo_a", "duo_b"):
            await log_everywhere(host, waiter, plugin)
        await host.publish("chat", "hello")
        for plugin in ("duo_a", "duo_b"):
            await waiter.wait_for_record(text=f"{plugin} logged in an event")
    assert seen(waiter, "duo_a") == by_itself
    assert {(r[0], r[1]) for r in seen(waiter, "duo_b")} == {
        ("plugin.duo_b.duo_b_plugin", "duo_b"),
        ("plugin.duo_b", "duo_b"),
        ("plugin.duo_b.shared.lib", "duo_b"),
    }
    assert len([r for r in seen(waiter, "duo_b") if r[2].endswith(PLACES)]) == len(PLACES)
    for plugin in ("duo_a", "duo_b"):
        (torn,) = waiter.matching(f"plugin.{plugin}.{plugin}_plugin", f"{plugin} torn down")
        assert stamped(torn) == plugin
    assert not waiter.select(plugin="duo", text="torn down")


async def test_loguru_and_structlog_records_of_a_member_are_its_own(tmp_path: Path) -> None:
    """loguru's and structlog's records in a member's call arrive under that member, the
    structlog event naming its logger as the host does, with no claim left over."""
    async with running(tmp_path, "duo_a", "duo_b") as (host, waiter):
        for plugin in ("duo_a", "duo_b"):
            await host.call(plugin, "log_with_loguru_and_structlog")
        for plugin in ("duo_a", "duo_b"):
            name = f"plugin.{plugin}.{plugin}_plugin"
            loguru = await waiter.wait_for(name, f"{plugin} logged with loguru")
            assert stamped(loguru) == plugin
            structlog = await waiter.wait_for_record(text=f"{plugin} logged with structlog")
            assert structlog.name == name and stamped(structlog) == plugin
            event = structlog.msg
            assert isinstance(event, dict)
            assert event["logger"] == name and event["plugin_id"] == plugin
            assert event["order"] == 7 and "extra_logger" not in event


async def test_no_name_takes_a_members_record_out_of_its_runner(tmp_path: Path) -> None:
    """Logging on another runner's plugin's logger, on the host's, or with another plugin's
    ``plugin_id`` as an extra: in a member's call the record is that member's, in a thread of
    no member's the group's, never the other plugin's nor the host's. A fellow member's logger
    leads to that member: one trust domain, one process."""
    async with running(tmp_path, "duo_a", "duo_b", "printer", logger=None) as (host, waiter):
        await host.call("duo_a", "log_as", logger="plugin.printer", text="as printer")
        await host.call("duo_a", "log_as", logger="isoplug.host", text="as the host")
        await host.call("duo_a", "log_as", logger="mine", text="claim", claim="printer")
        await host.call("duo_a", "log_as", logger="plugin.duo_b", text="as duo_b")
        texts = ("as printer", "as the host", "claim", "as duo_b")
        await waiter.wait_until(
            lambda: all(
                waiter.select(text=f"{text} in a {where}")
                for text in texts
                for where in ("call", "thread of nobody's")
            )
        )
    found = {
        r.getMessage(): (r.name, stamped(r), r.__dict__.get("extra_plugin_id"))
        for r in waiter.records
        if r.getMessage().startswith(texts)
    }
    assert found == {
        "as printer in a call": ("plugin.duo_a.plugin.printer", "duo_a", None),
        "as printer in a thread of nobody's": ("plugin.duo.plugin.printer", "duo", None),
        "as the host in a call": ("plugin.duo_a.isoplug.host", "duo_a", None),
        "as the host in a thread of nobody's": ("plugin.duo.isoplug.host", "duo", None),
        "claim in a call": ("plugin.duo_a.mine", "duo_a", "printer"),
        "claim in a thread of nobody's": ("plugin.duo.mine", "duo", "printer"),
        "as duo_b in a call": ("plugin.duo_b", "duo_b", None),
        "as duo_b in a thread of nobody's": ("plugin.duo_b", "duo_b", None),
    }


class Keep(logging.Handler):
    """Keeps the name and message each record has when it reaches this handler."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.msg))


async def test_the_new_name_is_the_forwarded_records_alone() -> None:
    """SourceNamingHandler sends a record of a source's code under the source's name (its
    structlog event's logger alike), a record already under a source and one of no source as
    they are; the record's other handlers see what the code logged, event dict untouched."""
    collector = RecordWaiter()
    with attached(collector, "rx"):
        receiver = LogReceiver(prefix="rx")
        await asyncio.to_thread(receiver.open)
        handler = SourceNamingHandler(
            receiver.address, receiver.token, sources=("plugin.a", "plugin.b")
        )
        keep = Keep()
        loggers = [logging.getLogger("app.naming"), logging.getLogger("plugin.b.naming")]
        try:
            assert await asyncio.to_thread(handler.start, 10.0)
            for logger in loggers:
                logger.propagate = False
                logger.setLevel(logging.INFO)
                logger.addHandler(handler)
                logger.addHandler(keep)
            event = {"event": "structured", "logger": "app.naming"}

            def log() -> None:
                token = current_source.set("plugin.a")
                try:
                    loggers[0].info("plain")
                    loggers[0].info(event)
                    loggers[1].info("under b")
                finally:
                    current_source.reset(token)
                loggers[0].info("no source")

            await asyncio.to_thread(log)
            await collector.wait_for_record(text="no source")
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
                logger.removeHandler(keep)
                logger.propagate = True
                logger.setLevel(logging.NOTSET)
            await asyncio.to_thread(handler.close)
            await asyncio.to_thread(receiver.close)
    received = [(r.name, r.msg) for r in collector.records]
    renamed = "rx.plugin.a.app.naming"
    assert received[0] == (renamed, "plain")
    assert received[1][0] == renamed and isinstance(received[1][1], dict)
    assert received[1][1]["logger"] == renamed and "extra_logger" not in received[1][1]
    assert received[2:] == [("rx.plugin.b.naming", "under b"), ("rx.app.naming", "no source")]
    assert keep.seen == [
        ("app.naming", "plain"),
        ("app.naming", {"event": "structured", "logger": "app.naming"}),
        ("plugin.b.naming", "under b"),
        ("app.naming", "no source"),
    ]
    assert keep.seen[1][1] is event


BEHIND_ON_TICKS = """
@isoplug.on_event("tick")
async def on_tick(self, payload):
    import asyncio
    await asyncio.Event().wait()  # never done: every later tick waits or is dropped
"""


async def test_a_members_dropped_events_are_said_as_its_own(tmp_path: Path) -> None:
    """The runner's warnings about the events a member dropped, or could not deliver at the
    stop, came on the group's runner logger with ``plugin_id`` the group's; alone they are the
    plugin's, and so they are now in a group."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "behind", BEHIND_ON_TICKS, group="g")
    write_plugin(plugins, "idle", "pass\n", group="g")
    config = dataclasses.replace(FAST, max_queued_events=2)
    with watching("plugin") as waiter:
        async with Host(plugins, config=config) as host:
            await host.wait_ready(20)
            # One taken (for ever), two queued, the rest dropped: the first drop said at once,
            # the others in a summary at the stop, with the queued ones; how many of each
            # depends on when the handler takes its first.
            for tick in range(6):
                await host.publish("tick", tick)
            await waiter.wait_for_record(text="plugin 'behind' dropped 1 'tick' event")
            await host.stop("behind")
            await waiter.wait_for_record(text="more 'tick' event(s)")
            await waiter.wait_for_record(text="event(s) were not delivered")
    said = [r for r in waiter.records if "plugin 'behind'" in r.getMessage()]
    assert len(said) == 3, [r.getMessage() for r in said]
    assert {(r.name, stamped(r)) for r in said} == {("plugin.behind.isoplug.runner", "behind")}
