"""A host that calls ``logging.config.dictConfig()`` after plugins have logged: its default
``disable_existing_loggers=True`` disables the plugin loggers isoplug made. Their records must
still reach the host's handlers, with one warning that names the cause and the real fix."""

from __future__ import annotations

import logging
import logging.config
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.wire import LogRecordData
from isoplug.wire.logframes import log_batch
from tests.log_helpers import replay, reports
from tests.plugins_fixtures import FAST, plugins_dir, running
from tests.record_waiter import RecordWaiter

PREFIX = "plugin.demo"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """dictConfig() changes the whole process's logging: put every logger back as it was."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved_root = root.level, root.handlers[:]
    saved = {
        name: (logger.disabled, logger.level, logger.propagate, logger.handlers[:])
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, logger in list(manager.loggerDict.items()):
            if not isinstance(logger, logging.Logger):
                continue
            if name not in saved:
                logger.disabled = False  # made during the test: it started enabled
                continue
            logger.disabled, level, logger.propagate, handlers = saved[name]
            logger.setLevel(level)
            logger.handlers[:] = handlers


def configure_host_logging(handler: logging.Handler) -> None:
    """What a host typically does at start-up, here after plugins have logged."""
    logging.config.dictConfig(
        {
            "version": 1,
            "handlers": {"host": {"()": lambda: handler}},
            "root": {"handlers": ["host"], "level": "DEBUG"},
        }
    )


def record(seq: int, name: str = "worker") -> LogRecordData:
    # WARNING: enabled before the host configures anything (the root logger's level).
    return LogRecordData(name, logging.WARNING, "WARNING", 1.0, seq=seq, message=f"message {seq}")


def test_records_after_dict_config_reach_its_handlers_with_one_warning() -> None:
    replayer = replay(PREFIX, [record(1), record(2, "other")])
    handler = RecordWaiter()
    configure_host_logging(handler)
    assert logging.getLogger(f"{PREFIX}.worker").disabled  # what logging.config does

    replayer.replay(log_batch([record(3), record(4, "other"), record(5)]))
    assert [r.getMessage() for r in handler.records if r.name != PREFIX] == [
        "message 3",
        "message 4",
        "message 5",
    ]
    (warning,) = reports(handler.records)
    assert warning.levelno == logging.WARNING and warning.name == PREFIX
    text = warning.getMessage()
    for part in (
        f"{PREFIX}, {PREFIX}.other, {PREFIX}.worker",
        "dictConfig()",
        "disable_existing_loggers=False",
        "logging.getLogger('plugin.demo').setLevel(logging.CRITICAL + 1)",
    ):
        assert part in text
    assert replayer.metrics.filtered == 0 and replayer.metrics.replayed == 5


def test_each_disabling_is_reported_once_and_a_level_still_silences() -> None:
    replayer = replay(PREFIX, [record(1)])
    handler = RecordWaiter()
    configure_host_logging(handler)
    replayer.replay(log_batch([record(2), record(3)]))
    configure_host_logging(handler)  # configured again: disabled again
    replayer.replay(log_batch([record(4)]))
    assert len(reports(handler.records)) == 2
    assert [r.getMessage() for r in handler.records if r.name != PREFIX] == [
        "message 2",
        "message 3",
        "message 4",
    ]

    # The way to silence a plugin is its logger's level: that is respected, silently.
    logging.getLogger(PREFIX).setLevel(logging.CRITICAL + 1)
    replayer.replay(log_batch([record(5)]))
    assert len(handler.records) == 5 and replayer.metrics.filtered == 1


def test_the_replayers_own_reports_are_not_silenced_either() -> None:
    """A report (here a sequence gap) on a disabled prefix logger enables it again first."""
    replayer = replay(PREFIX, [record(1)])
    handler = RecordWaiter()
    configure_host_logging(handler)
    logging.getLogger(f"{PREFIX}.worker").setLevel(logging.ERROR)  # the record is filtered
    replayer.replay(log_batch([record(5)]))
    texts = [r.getMessage() for r in reports(handler.records)]
    assert len(texts) == 2
    assert "had been disabled" in texts[0]
    assert "never arrived (sequence numbers 2 to 4)" in texts[1]
    assert replayer.metrics.filtered == 1


async def test_plugin_records_survive_a_host_dict_config(tmp_path: Path) -> None:
    """End to end: a plugin logs, the host calls dictConfig(), the plugin logs again."""
    name = "plugin.chronicler.chronicler.work"
    async with running(tmp_path, "chronicler") as (host, waiter):
        await host.call("chronicler", "log_payments", orders=["A"])
        await waiter.wait_for(name, "paid A")

        handler = RecordWaiter()
        configure_host_logging(handler)
        assert logging.getLogger(name).disabled
        await host.call("chronicler", "log_payments", orders=["B", "C"])
        await handler.wait_for(name, "paid C")
        metrics = host.log_metrics("chronicler")
    assert [r.getMessage() for r in handler.matching(name)] == ["paid B", "paid C"]
    (warning,) = [r for r in reports(handler.records) if "had been disabled" in r.getMessage()]
    assert warning.name == "plugin.chronicler"
    assert warning.plugin_id == "chronicler"  # type: ignore[attr-defined]
    assert metrics.filtered == 0


async def test_the_hosts_own_reports_survive_a_dict_config_made_after_the_import(
    tmp_path: Path,
) -> None:
    """The usual layout: isoplug imported at the top (its loggers exist), dictConfig() in
    main(), then the host. Its loggers are enabled again, saying so, and a crash is told."""
    handler = RecordWaiter()
    configure_host_logging(handler)
    assert logging.getLogger("isoplug.host").disabled
    async with Host(plugins_dir(tmp_path, "echo"), config=FAST) as host:
        await host.wait_ready(20)
        os.kill(host.plugin("echo").pid or 0, signal.SIGKILL)
        await handler.wait_for("isoplug.host", "plugin echo: crashed")
    (warning,) = [
        r for r in handler.matching("isoplug.host") if "had been disabled" in r.getMessage()
    ]
    assert "isoplug.host" in warning.getMessage()
    assert not logging.getLogger("isoplug.host").disabled
