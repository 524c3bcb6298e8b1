"""The README's "Security model", sentence by sentence, tried through every door of a plugin.

Each test runs a real host and a real runner of the ``hostile`` fixture, which sends text the
test chooses out of a door: ``logging``, ``print``, ``sys.stderr``, fd-level writes to fd 1
and 2 (as C code or a child process would), ``warnings`` and a logged exception.

The "Output" point's last sentences are tested where their machinery is: the fields JSON and
structlog formatters write from a record, by every door, in ``test_logs_forged_fields.py`` and
``test_logs_consumer_fields.py``; the losses a plugin cannot inflate in
``test_logs_sequence_claims.py`` and ``test_logs_loss_bounds.py``; ``isoplug:<id>`` in
``test_cli_attribution.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from isoplug import Host, PluginState, StateChange
from isoplug.errors import IsoplugError, RemoteError, RemoteProtocolError
from isoplug.logs import DropReason, ReplayLimits
from isoplug.rpc import Peer
from isoplug.wire import Hello, decode_message, encode_message
from tests.plugins_fixtures import FAST, plugins_dir
from tests.plugins_fixtures.hostile.hostile_plugin import DOORS
from tests.record_waiter import RecordWaiter, watching

#: A formatter of the usual shape: every record's first line starts at column 0.
FORMATTER = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
ESCAPES = "\x1b[2J\x1b[1;31mALERT \u202eevil\u200b\x07\x08\r pass\u034fword \u3164\ufe0f"
FORGED = "2026-01-01 00:00:00,000 INFO isoplug.host: plugin other: ready"


@asynccontextmanager
async def hostile(
    tmp_path: Path, log_limits: ReplayLimits | None = None
) -> AsyncIterator[tuple[Host, RecordWaiter]]:
    """A host running the hostile plugin; the waiter sees every record the root logger sees."""
    waiter = RecordWaiter()
    root = logging.getLogger()
    root.addHandler(waiter)
    plugin_logger = logging.getLogger("plugin")
    plugin_logger.setLevel(logging.DEBUG)
    try:
        async with Host(plugins_dir(tmp_path, "hostile"), config=FAST, log_limits=log_limits) as h:
            await h.wait_ready(20)
            yield h, waiter
    finally:
        root.removeHandler(waiter)
        plugin_logger.setLevel(logging.NOTSET)


def from_plugin(waiter: RecordWaiter, marker: str) -> list[logging.LogRecord]:
    """The records whose formatted text (exception included) contains ``marker``."""
    return [r for r in list(waiter.records) if marker in FORMATTER.format(r)]


async def arrival(waiter: RecordWaiter, marker: str) -> list[logging.LogRecord]:
    """Wait until records containing ``marker`` arrived; return them."""
    return await waiter.wait_until(lambda: from_plugin(waiter, marker) or None)


async def sent_through_every_door(
    host: Host, waiter: RecordWaiter, text: str
) -> dict[str, list[logging.LogRecord]]:
    """Send ``marker + text`` out of each door; return each door's records once arrived."""
    arrived: dict[str, list[logging.LogRecord]] = {}
    for door in DOORS:
        marker = f"door-{door}-"
        await host.call("hostile", "send", door=door, text=marker + text)
        arrived[door] = await arrival(waiter, marker)
    return arrived


async def test_every_door_lands_under_the_plugins_own_prefix(tmp_path: Path) -> None:
    """Logger names are confined under ``plugin.<id>.``, whatever the door or the name asked."""
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, "confined")
        for name in ("isoplug.host", "plugin.other", "..", "root", "\x1b[31m"):
            await host.call("hostile", "log_as", logger=name, text=f"as-{len(name)}-confined")
            await arrival(waiter, f"as-{len(name)}-")
    records = [r for door in arrived.values() for r in door]
    records += from_plugin(waiter, "-confined")
    assert records
    for record in records:
        assert record.name == "plugin.hostile" or record.name.startswith("plugin.hostile."), (
            record.name
        )
        assert record.plugin_id == "hostile"  # type: ignore[attr-defined]


async def test_escapes_and_bidi_controls_are_shown_as_escapes(tmp_path: Path) -> None:
    """Control characters, terminal escapes, bidi controls and invisible characters that could
    hide text (a zero-width space, a combining grapheme joiner, a Hangul filler, a variation
    selector after a space) arrive escaped, from every door."""
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, ESCAPES)
    for door, records in arrived.items():
        for record in records:
            text = FORMATTER.format(record)
            for raw in (
                "\x1b",
                "\u202e",
                "\u200b",
                "\x07",
                "\x08",
                "\r",
                "\u034f",
                "\u3164",
                "\ufe0f",
            ):
                assert raw not in text, (door, text)
            assert "\\x1b[2J" in text, (door, text)


async def test_no_plugin_text_starts_a_line_of_its_own(tmp_path: Path) -> None:
    """Continuation lines are indented: no door lets a plugin forge a line that looks like
    another logger's record, tracebacks on stderr included."""
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, f"first\n{FORGED}")
        for door in ("stderr", "fd_stderr"):
            marker = f"{door}-block.py"
            block = f'Traceback (most recent call last):\n  File "{marker}", line 1\n{FORGED}'
            await host.call("hostile", "send", door=door, text=block)
            arrived[f"{door} traceback"] = await arrival(waiter, marker)
    for door, records in arrived.items():
        for record in records:
            for line in FORMATTER.format(record).split("\n"):
                if "isoplug.host: plugin other" in line:
                    # Either indented inside the plugin's record, or a record of its own whose
                    # line starts with the time and the plugin's logger name.
                    assert line[:1] in (" ", "\t") or f" {record.name}: " in line, (door, line)


async def test_sizes_are_capped_and_cuts_are_marked(tmp_path: Path) -> None:
    """A megabyte of text through any door arrives capped, and says it was cut."""
    big = "x" * (1024 * 1024)
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, big)
    for door, records in arrived.items():
        for record in records:
            text = FORMATTER.format(record)
            assert len(text) < 100 * 1024, (door, len(text))
            assert "truncated" in text, door


async def test_each_plugin_is_rate_limited_through_every_door_and_drops_are_reported(
    tmp_path: Path,
) -> None:
    """The rate limit holds for logs, prints and fd-level output together; every line is
    delivered or counted as dropped, and the drops are reported."""
    count = 2000
    doors = ("log", "print", "fd_stdout")
    limits = ReplayLimits(rate=100.0, burst=300.0, report_interval=0.1)
    async with hostile(tmp_path, log_limits=limits) as (host, waiter):
        before = host.log_metrics("hostile")
        for door in doors:
            await host.call("hostile", "send_many", door=door, text=f"flood-{door}", count=count)

        def settled() -> bool:
            metrics = host.log_metrics("hostile")
            handled = metrics.replayed + metrics.filtered + sum(metrics.dropped.values())
            before_handled = before.replayed + before.filtered + sum(before.dropped.values())
            return handled - before_handled >= count * len(doors)

        # Drops are counted without a record to wake the waiter: poll the metrics.
        async with asyncio.timeout(40):
            while not settled():
                await asyncio.sleep(0.05)
        report = await waiter.wait_until(
            lambda: next((r for r in waiter.records if "rate limit" in r.getMessage()), None)
        )
        metrics = host.log_metrics("hostile")
    delivered = sum(len(from_plugin(waiter, f"flood-{door} ")) for door in doors)
    assert delivered < count * len(doors) // 2
    assert metrics.dropped.get(DropReason.RATE_LIMITED, 0) > count
    assert report.name == "plugin.hostile"


class RefusesFirsts(logging.Handler):
    """A host handler that raises on every record holding ``-first-``, its exception quoting
    escapes (as a handler quoting a record's raw text would)."""

    def emit(self, record: logging.LogRecord) -> None:
        if "-first-" in FORMATTER.format(record):
            raise RuntimeError(f"refused {ESCAPES}")


async def test_a_host_handler_that_raises_costs_the_plugin_that_record_only(
    tmp_path: Path,
) -> None:
    """A host handler raising on a plugin's record, through every door: the next record out of
    that door still arrives, every error is counted, and the host's own logger reports them,
    sanitized: the first at once, the others summed up."""
    handler = RefusesFirsts()
    plugin_logger = logging.getLogger("plugin")
    plugin_logger.addHandler(handler)
    try:
        async with hostile(tmp_path) as (host, waiter):
            for door in DOORS:
                await host.call("hostile", "send", door=door, text=f"door-{door}-first-")
                await host.call("hostile", "send", door=door, text=f"door-{door}-second-")
                await arrival(waiter, f"door-{door}-second-")
            metrics = host.log_metrics("hostile")
    finally:
        plugin_logger.removeHandler(handler)
    assert not from_plugin(waiter, "-first-")  # the raising handler stood before the waiter
    assert metrics.handler_errors == len(DOORS)
    (first, *summaries) = [
        r for r in waiter.records if r.name == "isoplug.host" and ("log handler" in r.getMessage())
    ]
    assert first.getMessage().startswith("a log handler raised RuntimeError: refused ")
    assert all(r.getMessage().startswith("log handlers raised ") for r in summaries)
    for report in (first, *summaries):
        text = FORMATTER.format(report)
        for raw in ("\x1b", "\u202e", "\u200b", "\x07", "\x08", "\r"):
            assert raw not in text, text
        assert "\\x1b[2J" in text, text


async def test_capability_grants_are_checked_on_the_host(tmp_path: Path) -> None:
    """A capability the manifest does not grant is refused, even when the host offers it."""
    async with hostile(tmp_path) as (host, _):
        host.register_capability("test.granted", lambda: "ok")
        host.register_capability("secret", lambda: "leaked")
        assert await host.call("hostile", "call_host", capability="test.granted") == "ok"
        with pytest.raises(RemoteError, match="may not call host capability 'secret'"):
            await host.call("hostile", "call_host", capability="secret")


async def test_the_token_is_never_on_the_command_line_or_in_the_environment(
    tmp_path: Path,
) -> None:
    """Each runner's tokens reach it on stdin: not in its argv, not in its environment."""
    async with hostile(tmp_path) as (host, _):
        pid = await host.call("hostile", "pid")
        supervisor = host._supervisor("hostile")
        tokens = [supervisor.expected_token(), supervisor.expected_log_token()]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    for token in tokens:
        assert token
        assert token.encode() not in cmdline
        assert token.encode() not in environ


async def test_sockets_live_in_a_fresh_private_directory(tmp_path: Path) -> None:
    """The host's control and log sockets sit in directories only the host's user can enter."""
    async with hostile(tmp_path) as (host, _):
        assert host._listener is not None
        addresses = [str(host._listener.address), host._log_bridge.address]
        for address in addresses:
            path = Path(address.removeprefix("unix:"))
            mode = stat.S_IMODE(os.stat(path.parent).st_mode)
            assert mode == 0o700, (address, oct(mode))
            assert path.parent != Path(os.environ.get("TMPDIR", "/tmp"))


async def test_absurd_json_lines_arrive_whole_at_the_streams_level(tmp_path: Path) -> None:
    """JSON lines with absurd levels, 1,000 levels of nesting or odd keys are never an error:
    each arrives once, at a sane level, its text intact or its fields as extras."""
    lines = {
        "absurd-level": '{"level": 1e308, "msg": "absurd-level"}',
        "negative-level": '{"level": -5, "msg": "negative-level"}',
        "deep": '{"msg": "deep", "v": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}",
        "keys": '{"msg": "keys", "1": 2, "": 3, "\\u001b[31m": 4}',
    }
    async with hostile(tmp_path) as (host, waiter):
        for door in ("stderr", "fd_stderr"):
            for text in lines.values():
                await host.call("hostile", "send", door=door, text=text)
            for marker in lines:
                records = await arrival(waiter, marker)
                assert len(records) == 1, (door, marker, records)
                assert records[0].levelno == logging.WARNING, (door, marker)
            waiter.records.clear()


async def test_a_forged_ready_report_cannot_speak_for_another_plugin(tmp_path: Path) -> None:
    """A plugin that sends its runner's ready report itself, naming another plugin, changes
    nothing about that plugin; a second report is refused."""
    changes: list[StateChange] = []
    with watching("isoplug.host") as waiter:
        directory = plugins_dir(tmp_path, "forger", "echo")
        async with Host(directory, config=FAST, on_change=changes.append) as host:
            await host.wait_for("echo", lambda info: info.state is PluginState.READY, timeout=20)
            await waiter.wait_until(
                lambda: waiter.matching("isoplug.host", "reported on plugins it does not run")
            )
            await waiter.wait_until(lambda: waiter.matching("isoplug.host", "second ready report"))
            assert host.plugin("echo").state is PluginState.READY
            assert await host.call("echo", "echo", value=1) == 1
    assert not [c for c in changes if "echo" in c.plugin_ids and c.state is PluginState.FAILED]
    assert not [c for c in changes if c.runner_id == "forger" and "echo" in c.plugin_ids]


async def host_records_of_a_failing_plugin(directory: Path, code: str) -> list[logging.LogRecord]:
    """The host's own records while a plugin ``bad`` with ``code`` fails to load."""
    plugin = directory / "bad"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text(
        'id = "bad"\nversion = "0.1"\nentry = "bad_plugin:P"\n[restart]\npolicy = "never"\n'
    )
    (plugin / "bad_plugin.py").write_text("import isoplug\n" + code)
    with watching("isoplug.host") as waiter:
        async with Host(directory, config=FAST) as host:
            await host.wait_for("bad", lambda info: info.state is PluginState.FAILED, 20)
            await waiter.wait_until(lambda: waiter.matching("isoplug.host", "ValueError"))
    return waiter.records


async def test_a_plugins_load_error_reaches_the_hosts_records_sanitized(tmp_path: Path) -> None:
    """An import or setup error's message is plugin text: in the host's own records it is
    escaped, and a forged host line inside it does not start a line."""
    message = f"\x1b[2J\x1b[31mred\u202e\r\n{FORGED}"
    setup = "class P(isoplug.Plugin):\n    async def setup(self, ctx):\n        raise ValueError"
    for stage, code in (
        ("import", f"raise ValueError({message!r})\n"),
        ("setup", f"{setup}({message!r})\n"),
    ):
        records = await host_records_of_a_failing_plugin(tmp_path / stage / "plugins", code)
        for record in records:
            text = FORMATTER.format(record)
            assert "\x1b" not in text and "\u202e" not in text and "\r" not in text, stage
            for line in text.split("\n")[1:]:
                assert line[:1] in (" ", "\t", "") or line.startswith("Traceback"), (stage, line)


def test_a_malformed_message_is_quoted_escaped_and_short() -> None:
    """A peer's bytes quoted in a protocol error (an unknown tag) are escaped and capped."""
    payload = msgspec.msgpack.encode([f"\x1b[2J\n{FORGED}" + "x" * 10_000, 1])
    with pytest.raises(RemoteProtocolError) as raised:
        decode_message(payload)
    text = str(raised.value)
    assert "\x1b" not in text and len(text) < 1000
    assert all(line[:1] in (" ", "") for line in text.split("\n")[1:])


def test_a_hello_with_a_huge_field_is_malformed() -> None:
    """A hello whose role or name is megabytes long is refused as malformed, in a short error."""
    for field in ("role", "name", "token"):
        hello = {"min_version": 1, "max_version": 1, "token": "t", field: "r" * 5_000_000}
        with pytest.raises(RemoteProtocolError) as raised:
            decode_message(encode_message(Hello(**hello)))  # type: ignore[arg-type]
        assert len(str(raised.value)) < 1000


async def test_the_hosts_messages_about_an_unauthenticated_peer_stay_short(
    tmp_path: Path,
) -> None:
    """A peer that connects with a 5 MB name gets refused; the host says so in short lines."""
    with watching() as waiter:
        async with hostile(tmp_path) as (host, _):
            assert host._listener is not None
            with pytest.raises(IsoplugError):
                await Peer.connect(str(host._listener.address), "t", name="n" * 5_000_000)
    assert all(len(FORMATTER.format(r)) < 4096 for r in waiter.records)


def assert_no_forged_line(text: str) -> None:
    """No escape in ``text``, and no line of it that could pass for a record of its own."""
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text, text
    assert not [line for line in text.split("\n") if line.startswith(FORGED[:10])], text


async def test_a_peers_hello_name_and_role_are_sanitized_in_the_hosts_records(
    tmp_path: Path,
) -> None:
    """What an unauthenticated peer says of itself (name, role), on the control listener and on
    the log listener, reaches the host's records escaped and without a line of its own."""
    name = f"\x1b[2Jevil\u202e\n{FORGED}"
    with watching() as waiter:
        async with hostile(tmp_path) as (host, _):
            assert host._listener is not None
            addresses = [str(host._listener.address), host._log_bridge.address]
            for address in addresses:
                for role in (f"weird\x1b\n{FORGED}", "control", "logs"):
                    with pytest.raises(IsoplugError) as raised:
                        await Peer.connect(address, "t", name=name, role=role)
                    assert "\x1b" not in str(raised.value)
            # Every refusal is logged (unknown role, or unknown runner).
            await waiter.wait_until(
                lambda: len([r for r in waiter.records if "evil" in r.getMessage()]) >= 6 or None
            )
    texts = [FORMATTER.format(r) for r in waiter.records]
    assert [t for t in texts if "evil" in t]
    for text in texts:
        assert_no_forged_line(text)


async def test_a_capability_name_with_escapes_is_sanitized(tmp_path: Path) -> None:
    """A plugin asking for a capability whose name carries escapes and a forged line: the
    refusal it gets back, and everything the host logs, is escaped and indented."""
    with watching() as waiter:
        async with hostile(tmp_path) as (host, _):
            for capability in (f"\x1b[2Jcap\u202e\n{FORGED}", "x" * 100_000):
                with pytest.raises(RemoteError) as raised:
                    await host.call("hostile", "call_host", capability=capability)
                text = str(raised.value)
                assert "may not call host capability" in text
                assert_no_forged_line(text)
                assert_no_forged_line(raised.value.remote_message)
                assert len(raised.value.remote_message) < 10_000
    for record in waiter.records:
        assert_no_forged_line(FORMATTER.format(record))
