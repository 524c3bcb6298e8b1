"""Text of any language from a plugin, through real runners and sockets: it arrives as it was
written (joiners, flags, logger names in any script), while the security model's escapes hold;
lines that hold a name that is not UTF-8, or that are cut inside a character, arrive whole and
at their level.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tests.plugins_fixtures import running
from tests.test_logs_forwarding import PREFIX, finish, receiving, run_script
from tests.test_security_model import FORMATTER, arrival, hostile, sent_through_every_door

#: Ordinary text that holds format characters: Persian with ZWNJ, a Devanagari conjunct with
#: ZWJ, an emoji family and the rainbow flag (ZWJ, a variation selector), Scotland's flag (tag
#: characters), a German word with soft hyphens.
ORDINARY = (
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \u0915\u094d\u200d\u0937 "
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f3f3\ufe0f\u200d\U0001f308 "
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f "
    "Donau\u00addampf\u00adschiff"
)
#: What the sanitizer must still escape beside it: a bidi override, a right-to-left mark, a
#: zero-width space, tags that follow no flag.
HIDING = "\u202eevil \u200f! a\u200bb \U000e0041\U000e0042"
#: A file name that is not UTF-8, as ``os.listdir()`` gives it (a lone surrogate).
NOT_UTF8 = os.fsdecode(b"rapport_caf\xe9.pdf")
#: What a JSON log formatter (python-json-logger, structlog's JSONRenderer) prints of an
#: error about that file: ``json.dumps`` writes the surrogate as ``\udce9``.
JSON_LINE = json.dumps({"message": f"cannot open {NOT_UTF8}", "level": "error", "file": NOT_UTF8})
#: The surrogate as the sanitizer shows it.
SHOWN_NAME = "rapport_caf\\udce9.pdf"


async def test_ordinary_text_of_any_language_arrives_unchanged_through_every_door(
    tmp_path: Path,
) -> None:
    """Joiners, variation selectors, a flag's tags and soft hyphens arrive as written, from
    every door, while the bidi override, the mark, the zero-width space and stray tags beside
    them still arrive escaped."""
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, f"{ORDINARY} {HIDING}")
    for door, records in arrived.items():
        text = "\n".join(FORMATTER.format(record) for record in records)
        assert ORDINARY in text, (door, text)
        for hidden in ("\u202e", "\u200f", "\u200b", "\U000e0041"):
            assert hidden not in text, (door, text)
        assert "\\u202eevil \\u200f! a\\u200bb \\U000e0041\\U000e0042" in text, (door, text)


#: Logger names in Cyrillic (two that differ only before their common last part), Japanese,
#: Latin with accents, and Devanagari (whose vowel signs and virama are combining marks).
NAMES = (
    "\u043c\u043e\u0434\u0443\u043b\u044c.\u0431\u0430\u0437\u0430",
    "\u0441\u0435\u0440\u0432\u0438\u0441.\u0431\u0430\u0437\u0430",
    "app.\u00fcn\u00ef",
    "\u092e\u0949\u0921\u094d\u092f\u0942\u0932",
)
#: A logger the host turns down to ERROR: its name must arrive whole for that to apply.
QUIETED = "\u65e5\u672c"


async def test_logger_names_in_any_script_arrive_whole_and_host_levels_apply(
    tmp_path: Path,
) -> None:
    """Each plugin logger named in another script gets a host logger of that name, distinct
    from the others; the level the host sets on one applies to its records."""
    quieted = logging.getLogger(f"plugin.hostile.{QUIETED}")
    quieted.setLevel(logging.ERROR)
    try:
        async with hostile(tmp_path) as (host, waiter):
            await host.call("hostile", "log_as", logger=QUIETED, text="from the quieted logger")
            for name in NAMES:
                await host.call("hostile", "log_as", logger=name, text=f"from {name}")
            # Records of one runner's thread arrive in order: after the last, all are in.
            await arrival(waiter, f"from {NAMES[-1]}")
    finally:
        quieted.setLevel(logging.NOTSET)
    names = {r.getMessage(): r.name for r in waiter.records if r.name.startswith("plugin.")}
    assert {f"from {name}": f"plugin.hostile.{name}" for name in NAMES}.items() <= names.items()
    assert "from the quieted logger" not in names


async def test_a_forwarding_child_s_logger_names_in_any_script_arrive_whole(
    tmp_path: Path,
) -> None:
    """A standalone LogReceiver keeps a sender's non-ASCII logger names too."""
    script = (
        "import logging, sys\n"
        "from isoplug.logs import forward_logs\n"
        "forward_logs()\n"
        "for name in sys.argv[1:]:\n"
        "    logging.getLogger(name).warning('from %s', name)\n"
    )
    async with receiving() as (receiver, collector):
        code, stderr = await finish(await run_script(receiver, script, *NAMES, QUIETED))
        await collector.wait_until(lambda: len(collector.records) == len(NAMES) + 1 or None)
    assert code == 0, stderr
    assert {r.name for r in collector.records} == {f"{PREFIX}.{n}" for n in (*NAMES, QUIETED)}


@pytest.mark.parametrize("door", ["print", "fd_stdout"])
async def test_a_json_line_naming_a_file_that_is_not_utf8_keeps_its_level(
    door: str, tmp_path: Path
) -> None:
    """A printed JSON line whose file name ``json.dumps`` wrote as a lone surrogate escape is
    read as JSON (stdio "records": print() read in the runner, fd-level writes by the host):
    the record is at the line's level, the name shown escaped, as the sanitizer shows it."""
    async with hostile(tmp_path) as (host, waiter):
        await host.call("hostile", "send", door=door, text=JSON_LINE)
        record = await waiter.wait_for("plugin.hostile.stdout", "cannot open")
    assert (record.levelname, record.getMessage()) == ("ERROR", f"cannot open {SHOWN_NAME}")
    assert record.__dict__["file"] == SHOWN_NAME


async def test_a_json_line_naming_a_file_that_is_not_utf8_keeps_its_level_from_a_pipe(
    tmp_path: Path,
) -> None:
    """Likewise under stdio "pipe", where the host reads print()'s lines from the pipe."""
    async with running(tmp_path, "piper") as (host, waiter):
        await host.call("piper", "say", text=JSON_LINE)
        record = await waiter.wait_for("plugin.piper.stdout", "cannot open")
    assert (record.levelname, record.getMessage()) == ("ERROR", f"cannot open {SHOWN_NAME}")
    assert record.__dict__["file"] == SHOWN_NAME


async def test_a_long_fd_level_line_is_cut_between_characters(tmp_path: Path) -> None:
    """30,000 bytes of three-byte characters written to fd 1: the 16 KiB cut falls between two
    of them (no U+FFFD before the mark), and the mark counts every byte left out."""
    line = "\u65e5" * 10_000
    async with hostile(tmp_path) as (host, waiter):
        await host.call("hostile", "send", door="fd_stdout", text=line)
        record = await waiter.wait_for("plugin.hostile.stdout", "truncated")
    message = record.getMessage()
    head, mark, rest = message.partition("... [truncated ")
    assert mark and "\ufffd" not in head and set(head) == {"\u65e5"}, message[-60:]
    assert rest == f"{len(line.encode()) - len(head.encode())} bytes]"
    assert len(head.encode()) > 16 * 1024 - 3
