"""Who says a line of ``isoplug run``'s console: the host's reports about a plugin, and its own
records, in a source column no plugin can fill in the same way (``isoplug.logs.attribution``);
with real runners, the console read from a real ``isoplug run``."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from pathlib import Path

from isoplug.cli import ConsoleFormatter
from isoplug.logs.attribution import attribute
from tests.plugins_fixtures import plugins_dir
from tests.test_cli import read_until, start_cli

#: time, source, label, message (the label is one word: no custom level here has a space).
LINE = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) (\S+) +(\S+) +(.*)")
IMITATION = "41 log records from plugin mimic never arrived (sequence numbers 3 to 43)"
FORGED_READY = "plugin mimic: ready: runner mimic (pid 1) in 0.01 s"


def heads(output: str) -> list[tuple[str, str, str]]:
    """(source, label, message) of each record's first line (continuations are indented)."""
    found = []
    for line in output.splitlines():
        match = LINE.fullmatch(line)
        if match:
            found.append((match[2], match[3], match[4]))
    return found


async def test_the_console_tells_the_hosts_report_from_a_plugins_imitation(tmp_path: Path) -> None:
    """``mimic`` makes the host report 41 records lost, then logs the same words itself, at a
    level named ``isoplug``, with an ``isoplug_report`` extra; the plugin whose id is
    ``isoplug`` says what the host says when a plugin is ready. Only the host's lines have a
    host's source."""
    cli = await start_cli("run", str(plugins_dir(tmp_path, "mimic", "isoplug_named")))
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            for pattern in (
                r"imitations sent",
                r"plugin isoplug: ready: runner isoplug",
                re.escape(FORGED_READY),
                r"never arrived \(sequence numbers \d+ to \d+\)$",
            ):
                await read_until(cli, pattern, seen)
    finally:
        if cli.returncode is None:
            cli.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(cli.communicate(), 30)
    output = "".join(seen) + rest.decode()
    lines = heads(output)
    lost = [(source, label, text) for source, label, text in lines if "never arrived" in text]
    # The host's report, marked, and the two imitations, under the plugin's id whatever their
    # level's name or extras claim.
    reports = [line for line in lost if line[0] == "isoplug:mimic"]
    assert len(reports) == 1, output
    assert re.fullmatch(
        r"41 log records from plugin mimic never arrived \(sequence numbers \d+ to \d+\)",
        reports[0][2],
    ), output
    assert sorted(line for line in lost if line not in reports) == [
        ("mimic", "isoplug", IMITATION),
        ("mimic", "warning", IMITATION),
    ], output
    # The plugin named isoplug cannot pass for the host.
    assert ("plugin.isoplug", "info", FORGED_READY) in lines, output
    assert not [line for line in lines if line[0] == "isoplug" and line[2] == FORGED_READY]
    # Every source is the host's (isoplug, isoplug:<id>) or a plugin's as only it can be.
    assert {source for source, _, _ in lines} <= {
        "isoplug",
        "isoplug:mimic",
        "mimic",
        "plugin.isoplug",
    }, output


def record(name: str, **fields: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": name, "levelno": logging.WARNING, "levelname": "WARNING", "msg": "m", **fields}
    )


def test_only_the_host_fills_in_the_host_sources() -> None:
    """What a record's logger and ``isoplug_report`` make of the source column."""
    cases = {
        record("plugin.db"): ("db", "db", "warning", False),
        record("plugin.db.stderr"): ("db", "db", "stderr", False),
        record("plugin.db.x", levelname="isoplug"): ("db", "db", "isoplug", False),
        record("plugin.db", isoplug_report=True): ("db", "isoplug:db", "warning", True),
        # Only exactly True: the host's marker is never a plugin's renamed extra's value.
        record("plugin.db", isoplug_report="yes"): ("db", "db", "warning", False),
        record("plugin.db", extra_isoplug_report=True): ("db", "db", "warning", False),
        record("plugin.isoplug"): ("isoplug", "plugin.isoplug", "warning", False),
        record("plugin.ISOPLUG.stdout"): ("ISOPLUG", "plugin.ISOPLUG", "stdout:warning", False),
        # An output stream at its own level says the stream; at any other, the level too.
        record("plugin.db.stderr", levelno=logging.ERROR, levelname="ERROR"): (
            "db",
            "db",
            "stderr:error",
            False,
        ),
        record("plugin.db.stdout", levelno=logging.INFO, levelname="INFO"): (
            "db",
            "db",
            "stdout",
            False,
        ),
        record("isoplug.host"): (None, "isoplug", "warning", True),
        record("isoplug.logs", isoplug_report=True): (None, "isoplug", "warning", True),
    }
    for given, (plugin, source, label, host) in cases.items():
        said = attribute(given)
        assert (said.plugin, said.source, said.label, said.host) == (plugin, source, label, host)
    formatter = ConsoleFormatter(colour=False)
    line = formatter.format(record("plugin.db", isoplug_report=True))
    assert re.fullmatch(r"\S+ isoplug:db +warning +m", line), line
    coloured = ConsoleFormatter(colour=True).format(record("plugin.db", isoplug_report=True))
    assert "\033[1misoplug:db" in coloured  # bold, as the host's own lines


LEVELLED = """
import json, logging, sys
import isoplug

class Levelled(isoplug.Plugin):
    async def setup(self, context) -> None:
        print(json.dumps({"message": "json at error", "level": "error"}), flush=True)
        logging.getLogger("stdout").error("logged at error on stdout")
        print("plain print", flush=True)
        print("plain stderr", file=sys.stderr, flush=True)
        print("levelled done", flush=True)
"""


async def test_the_console_shows_a_stream_records_level(tmp_path: Path) -> None:
    """A printed JSON line at error level, and an ERROR record on a logger named stdout, show
    ``stdout:error``: their level is not hidden behind the stream. A plain print shows
    ``stdout`` (INFO), a plain stderr line ``stderr`` (WARNING), as before."""
    folder = tmp_path / "plugins" / "levelled"
    folder.mkdir(parents=True)
    (folder / "levelled.py").write_text(LEVELLED)
    (folder / "plugin.toml").write_text(
        'id = "levelled"\nversion = "1"\nentry = "levelled:Levelled"\n'
    )
    cli = await start_cli("run", str(tmp_path / "plugins"))
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await read_until(cli, r"levelled done", seen)
    finally:
        if cli.returncode is None:
            cli.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(cli.communicate(), 30)
    output = "".join(seen) + rest.decode()
    lines = [line for line in heads(output) if line[0] == "levelled"]
    for expected in (
        ("levelled", "stdout:error", "json at error"),
        ("levelled", "stdout:error", "logged at error on stdout"),
        ("levelled", "stdout", "plain print"),
        ("levelled", "stderr", "plain stderr"),
    ):
        assert expected in lines, output
