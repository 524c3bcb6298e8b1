"""A plugin's format string arrives as the host record's ``msg``, so tools that group records by
template (Sentry groups on ``record.msg``) see one template, while ``getMessage()`` returns
exactly the message the plugin rendered."""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import structlog

from isoplug.logs import LogReplayer
from isoplug.logs.capture import MAX_FIELD_CHARS, capture_record
from isoplug.logs.templates import LogEvent, LogTemplate
from isoplug.wire import LogRecordData
from tests.log_helpers import batch, captured, record_decoder, replay
from tests.plugins_fixtures import running
from tests.record_waiter import RecordWaiter, watching

PREFIX = "plugin.demo"


@pytest.fixture
def collector() -> Iterator[RecordWaiter]:
    """Collects what reaches the ``plugin.demo`` logger during the test."""
    with watching(PREFIX) as waiter:
        yield waiter


def test_records_of_one_template_share_msg_and_render_as_the_plugin_did(
    collector: RecordWaiter,
) -> None:
    def log(logger: logging.Logger) -> None:
        logger.info("paid %s", "A")
        logger.info("paid %s", "B")

    replay(PREFIX, captured(log))
    first, second = collector.records
    assert first.msg == second.msg == "paid %s"
    assert isinstance(first.msg, str) and hash(first.msg) == hash("paid %s")
    assert [first.getMessage(), second.getMessage()] == ["paid A", "paid B"]
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    assert formatter.format(first) == "INFO plugin.demo.sender: paid A"
    assert first.args == ("paid A",)


@pytest.mark.parametrize(
    "log",
    [
        pytest.param(lambda lg: lg.info("plain"), id="no args"),
        pytest.param(lambda lg: lg.info("100%% %s", "sure", extra={"k": 1}), id="extras"),
        pytest.param(lambda lg: lg.info("%(who)s paid", {"who": "ann"}), id="mapping"),
        pytest.param(lambda lg: lg.info("%d items", 3, stack_info=True), id="general path"),
        pytest.param(lambda lg: lg.info("%d items", "three"), id="format fails"),
    ],
)
def test_the_template_is_sent_only_with_arguments_and_on_every_path(
    collector: RecordWaiter, log: Callable[[logging.Logger], None]
) -> None:
    """Fast path or general path, a record has its template exactly when it had arguments, and
    the host's getMessage() is the sender's message either way."""
    (encoded,) = captured(log)
    data = record_decoder.decode(encoded)
    replay(PREFIX, [encoded])
    (record,) = collector.records
    assert record.getMessage() == data.message
    if data.message == "plain":
        assert data.template is None and record.msg == "plain" and record.args == ()
        # Exactly what it was before templates: the array stops after the message.
        assert len(msgspec.msgpack.decode(encoded)) == 15
    else:
        assert data.template is not None and record.msg == data.template
        assert type(record.msg) is LogTemplate


def test_a_template_that_does_not_match_its_message_never_raises(collector: RecordWaiter) -> None:
    """A hostile sender: the template's specifiers have nothing to do with the message."""
    template = "%s %d %(x)s %.3f %"
    records = [
        LogRecordData("w", logging.INFO, "INFO", 1.0, seq=1, message="hi", template=template),
        LogRecordData("w", logging.INFO, "INFO", 1.0, seq=2, message="", template="%s\x1b[2J\nX"),
        LogRecordData("w", logging.INFO, "INFO", 1.0, seq=3, message="m", template="%" * 100),
    ]
    replay(PREFIX, records, max_message_chars=50)
    first, second, third = collector.records
    assert first.msg == template and first.getMessage() == "hi"
    # Sanitized like messages: control characters escaped, lines indented, length capped.
    assert second.msg == "%s\\x1b[2J\n  X" and second.getMessage() == ""
    assert third.msg.startswith("%" * 50 + "... [truncated 50")
    for record in collector.records:
        assert logging.Formatter("%(message)s").format(record) == record.getMessage()
        assert copy.copy(record).getMessage() == record.getMessage()
        assert record.msg % record.args == record.getMessage()


def test_a_filter_that_rewrites_args_changes_the_message(collector: RecordWaiter) -> None:
    """args is (the rendered message,): a redacting filter that rewrites it is obeyed, and
    arguments of another shape are formatted into the template as usual."""
    replay(PREFIX, captured(lambda logger: logger.info("token %s", "s3cret")))
    (record,) = collector.records
    record.args = ("token [redacted]",)
    assert record.getMessage() == "token [redacted]"
    record.args = (42,)
    assert record.getMessage() == "token 42"


def test_records_of_one_template_share_one_object(collector: RecordWaiter) -> None:
    def log(logger: logging.Logger) -> None:
        for n in range(3):
            logger.info("n=%d", n)

    replay(PREFIX, captured(log))
    first, *others = collector.records
    assert len(others) == 2 and all(record.msg is first.msg for record in others)
    assert [record.getMessage() for record in collector.records] == ["n=0", "n=1", "n=2"]


def test_replayed_records_survive_pickle_copy_and_queue_handlers(collector: RecordWaiter) -> None:
    replay(PREFIX, captured(lambda logger: logger.warning("paid %s of %d", "A", 3)))
    (record,) = collector.records
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(record, protocol))
        assert (again.msg, again.getMessage()) == ("paid %s of %d", "paid A of 3")
    for duplicate in (copy.copy(record), copy.deepcopy(record)):
        assert (duplicate.msg, duplicate.getMessage()) == ("paid %s of %d", "paid A of 3")
    prepared = logging.handlers.QueueHandler(None).prepare(record)  # type: ignore[arg-type]
    assert prepared.getMessage() == "paid A of 3"


def test_structlog_processor_formatter_renders_foreign_records_with_their_message(
    collector: RecordWaiter,
) -> None:
    replay(PREFIX, captured(lambda logger: logger.info("paid %s", "A", extra={"order": 17})))
    (record,) = collector.records
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ExtraAdder(allow=["order"]),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )
    assert json.loads(formatter.format(record)) == {
        "event": "paid A",
        "level": "info",
        "order": 17,
    }
    assert record.msg == "paid %s" and record.getMessage() == "paid A"


def test_a_logged_dict_renders_as_the_plugin_did_and_states_the_hosts_truth_as_fields(
    collector: RecordWaiter,
) -> None:
    replayer = LogReplayer(PREFIX, description="demo", identity={"plugin_id": "demo"})
    replayer.replay(batch(captured(lambda logger: logger.info({"a": 1, "plugin_id": "host"}))))
    (record,) = collector.records
    # What a stdlib formatter prints is what the plugin's own logging printed...
    assert record.getMessage() == "{'a': 1, 'plugin_id': 'host'}"
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    assert formatter.format(record) == "INFO plugin.demo.sender: {'a': 1, 'plugin_id': 'host'}"
    # ...while tools that read the dict's keys as fields read the host's truth.
    event = record.msg
    assert isinstance(event, LogEvent)
    assert event["plugin_id"] == "demo" and event["extra_plugin_id"] == "host"
    assert event["a"] == 1 and event["logger"] == "plugin.demo.sender"
    assert type(event.copy()) is dict and "plugin_id" in json.loads(json.dumps(event))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(record, protocol))
        assert (again.msg, again.getMessage()) == (record.msg, record.getMessage())
    for duplicate in (copy.copy(record), copy.deepcopy(record)):
        assert (duplicate.msg, duplicate.getMessage()) == (record.msg, record.getMessage())
    # A host that is itself a plugin forwards it on as the event it is, with its text.
    data = record_decoder.decode(capture_record(record, 1))
    assert data.event is not None and data.event["a"] == 1
    assert data.message == "{'a': 1, 'plugin_id': 'host'}"


def test_templates_are_capped_in_the_emitting_process(collector: RecordWaiter) -> None:
    """A template longer than the field cap (its message is short) is cut like a message."""
    template = "%(a).0s" * (MAX_FIELD_CHARS // 7 + 10)
    (encoded,) = captured(lambda logger: logger.info(template, {"a": 1}))
    data = record_decoder.decode(encoded)
    assert data.message == ""
    assert data.template is not None and data.template.startswith(template[:MAX_FIELD_CHARS])
    assert data.template.endswith(" characters in the emitting process]")


def test_a_replayed_record_forwarded_again_keeps_its_template(collector: RecordWaiter) -> None:
    """A host that is itself a plugin forwards the replayed record with the same template."""
    replay(PREFIX, captured(lambda logger: logger.info("paid %s", "A")))
    (record,) = collector.records
    data = record_decoder.decode(capture_record(record, 1))
    assert (data.template, data.message) == ("paid %s", "paid A")


async def test_a_plugins_template_reaches_the_host_as_msg(tmp_path: Path) -> None:
    """End to end, with a real runner: two calls of one template, two orders."""
    name = "plugin.chronicler.chronicler.work"
    async with running(tmp_path, "chronicler") as (host, waiter):
        await host.call("chronicler", "log_payments", orders=["A", "B"])
        await waiter.wait_until(lambda: len(waiter.matching(name, "paid")) >= 2)
    first, second = waiter.matching(name, "paid")
    assert first.msg == second.msg == "paid %s"
    assert (first.getMessage(), second.getMessage()) == ("paid A", "paid B")
