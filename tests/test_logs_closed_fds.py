"""A plugin that closes its runner's log socket behind the forwarding handler's back (as a
daemonizing plugin or an fd-cleanup loop does) loses no record silently: the handler's sender
thread takes it for a broken connection and connects again, never writes into a file or socket
of the plugin's that took the number, and the records a crash then takes come back from the
new connection's ring."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug.errors import ConnectionBroken
from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter


def numbered(waiter: RecordWaiter) -> list[int]:
    return [r.n for r in waiter.records if hasattr(r, "n")]


@pytest.mark.parametrize("ledger", [False, True], ids=["socket", "socket-and-ledger"])
async def test_records_after_the_plugin_closed_the_log_socket_arrive(
    tmp_path: Path, ledger: bool
) -> None:
    async with running(tmp_path, "fdcloser") as (host, waiter):
        await host.call("fdcloser", "close_then_log", count=100, ledger=ledger)
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 100 or None)
        await waiter.wait_for("plugin.fdcloser", "reconnected")
        metrics = host.log_metrics("fdcloser")
    assert numbered(waiter) == list(range(100))
    assert not metrics.dropped
    assert not [r for r in waiter.records if "Exception in thread" in r.getMessage()]


async def test_a_file_or_socket_that_took_the_log_sockets_number_gets_no_log_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plugin-file"
    async with running(tmp_path, "fdcloser") as (host, waiter):
        result = await host.call("fdcloser", "reuse_then_log", count=50, path=str(path))
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 50 or None)
        metrics = host.log_metrics("fdcloser")
    assert result == {"reused": True, "foreign": 0, "echoed": "still mine"}
    assert path.read_bytes() == b"mine"
    assert numbered(waiter) == list(range(50))
    assert not metrics.dropped


async def test_records_a_crash_takes_after_the_reconnection_come_back_from_the_ring(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "fdcloser") as (host, waiter):
        with pytest.raises(ConnectionBroken):
            await host.call("fdcloser", "close_log_then_exit", count=300)
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 600 or None)
        metrics = host.log_metrics("fdcloser")
    assert sorted(numbered(waiter)) == list(range(600))
    assert not metrics.dropped


async def test_records_a_kill_takes_before_the_reconnection_come_back_from_the_old_ring(
    tmp_path: Path,
) -> None:
    # The connection ended (the plugin closed its socket) while the runner lived on: the
    # host keeps the old ledger and ring until the runner reconnects or dies; it dies.
    async with running(tmp_path, "fdcloser") as (host, waiter):
        with pytest.raises(ConnectionBroken):
            await host.call("fdcloser", "close_log_then_die", count=200)
        await waiter.wait_until(lambda: len(numbered(waiter)) >= 200 or None)
        metrics = host.log_metrics("fdcloser")
    assert numbered(waiter) == list(range(200))
    assert metrics.recovered == 200
    assert not metrics.dropped
