"""Whatever a sender puts in a log record, the replayer neither raises nor hands ``logging`` a
record that a formatter cannot print."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isoplug.logs import LogReplayer, ReplayLimits
from isoplug.wire import LogRecordData
from isoplug.wire.logframes import log_batch
from tests.record_waiter import watching
from tests.wire_strategies import PROPERTY, drop_counts, log_records

FORMATTERS = (
    logging.Formatter(),
    logging.Formatter("%(asctime)s %(lineno)d %(levelname)s"),
    logging.Formatter(
        "%(asctime)s.%(msecs)03d %(relativeCreated)d %(levelname)s %(name)s %(pathname)s "
        "%(filename)s:%(lineno)d %(funcName)s %(module)s %(process)s %(processName)s "
        "%(thread)s %(threadName)s: %(message)s"
    ),
)

#: Fields worth pushing to their extremes on top of what log_records draws.
edge_floats = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 0.0])
edge_ints = st.sampled_from([0, -1, 2**31, -(2**63), 2**64 - 1])


@st.composite
def hostile_records(draw: st.DrawFn) -> LogRecordData:
    """A drawn record, some of whose fields are replaced by edge values."""
    record = draw(log_records)
    changes: dict[str, Any] = {}
    if draw(st.booleans()):
        changes["created"] = draw(edge_floats)
    for field in ("levelno", "lineno", "thread", "process", "seq"):
        if draw(st.booleans()):
            changes[field] = draw(edge_ints)
    if draw(st.booleans()):
        changes["lineno"] = None
    if not changes:
        return record
    values = {name: getattr(record, name) for name in record.__struct_fields__}
    values.update(changes)
    return LogRecordData(**values)


@pytest.mark.slow
@settings(PROPERTY, max_examples=300)
@given(records=st.lists(hostile_records(), max_size=4), dropped=drop_counts)
def test_replay_never_raises_and_every_record_formats(
    records: list[LogRecordData], dropped: dict[int, int]
) -> None:
    replayer = LogReplayer(
        "plugin.fuzz",
        identity={"plugin_id": "fuzz", "runner_pid": 4242},
        strip_prefixes=("plugin.fuzz",),
        limits=ReplayLimits(),
        description="plugin fuzz",
    )
    with watching() as waiter:
        replayer.replay(log_batch(records, dropped))
    for record in waiter.records:
        for formatter in FORMATTERS:
            text = formatter.format(record)
            assert isinstance(text, str)
        assert record.name == "plugin.fuzz" or record.name.startswith(("plugin.fuzz.", "isoplug"))
