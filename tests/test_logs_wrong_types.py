"""A standard record attribute of the wrong type (a plugin's filter doing
``record.thread = "x"``) costs the record nothing: it arrives, the field at its default or the
host's word, the value kept as text in ``extra_<attribute>``; nothing is counted malformed.
Real senders: a plugin in a real host, and a ``forward_logs`` child against a LogReceiver."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from isoplug.logs.capture import capture_record
from isoplug.logs.metrics import DropReason
from isoplug.wire import LogRecordData
from tests.plugins_fixtures import running
from tests.plugins_fixtures.impostor.impostor_plugin import WRONG_TYPES
from tests.test_logs_forwarding import finish, receiving, run_child


async def test_a_plugins_wrong_typed_standard_fields_arrive_as_extras(tmp_path: Path) -> None:
    async with running(tmp_path, "impostor") as (host, waiter):
        pid = await host.call("impostor", "pid")
        await host.call("impostor", "wrong_types")
        await waiter.wait_for("plugin.impostor.impostor.work", "wrong types done")
        records = {
            suffix: {
                name: await waiter.wait_for(
                    "plugin.impostor.impostor.work", f"wrong {name}{suffix}"
                )
                for name in WRONG_TYPES
            }
            for suffix in ("", " with extra")
        }
        metrics = host.log_metrics("impostor")
    assert DropReason.MALFORMED not in metrics.dropped, metrics.dropped
    for suffix, by_name in records.items():
        for name, record in by_name.items():
            claim = WRONG_TYPES[name]
            kept = vars(record)[f"extra_{name}"]
            assert kept == (claim if type(claim) is str else repr(claim)), (suffix, name)
            # The record is whole and usable by every formatter.
            assert logging.Formatter(
                "%(asctime)s %(levelname)s %(lineno)s %(thread)s %(threadName)s %(process)d "
                "%(funcName)s %(message)s"
            ).format(record)
        assert by_name["levelno"].levelno == logging.WARNING  # from its level name
        assert by_name["process"].process == pid
        assert by_name["lineno"].lineno == 0 and by_name["thread"].thread is None
        assert by_name["threadName"].threadName is None and by_name["funcName"].funcName == ""
        assert isinstance(by_name["created"].created, float)
    assert records[" with extra"]["thread"].item == 1  # type: ignore[attr-defined]


async def test_a_forwarded_records_wrong_typed_thread_arrives_as_an_extra() -> None:
    async with receiving() as (receiver, collector):
        child = await run_child(receiver, "wrong-thread")
        code, stderr = await finish(child)
        plain = await collector.wait_for("kids.child.work", "thread x")
        with_extra = await collector.wait_for("kids.child.work", "thread x with extra")
        metrics = list(receiver.metrics().values())
    assert code == 0, stderr
    for record in (plain, with_extra):
        assert record.thread is None and record.extra_thread == "x"  # type: ignore[attr-defined]
    assert all(DropReason.MALFORMED not in m.dropped for m in metrics), metrics


@pytest.mark.parametrize(("name", "value"), list(WRONG_TYPES.items()))
def test_the_senders_general_path_sends_a_record_the_wire_type_accepts(
    name: str, value: object
) -> None:
    """A record with an extra takes the sender's general path, which fits the field itself
    (the receiver's salvage is only needed for the straight-line path's plain records)."""
    record = logging.LogRecord("a", logging.INFO, "/a.py", 3, "m", (), None, func="f")
    record.item = 1
    setattr(record, name, value)
    data = msgspec.msgpack.Decoder(LogRecordData).decode(capture_record(record, 1))
    assert data.extra == {"item": 1, f"extra_{name}": value if type(value) is str else repr(value)}
    assert data.levelno == logging.INFO and data.message == "m"
