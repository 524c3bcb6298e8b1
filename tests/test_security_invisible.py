"""Invisible characters from a real plugin, through every door: what no renderer draws (the
combining grapheme joiner, Hangul fillers, variation selectors, tags) arrives escaped, in
messages and tracebacks, and never in a logger name; ordinary text spelt with some passes."""

from __future__ import annotations

from pathlib import Path

from tests.test_security_model import FORMATTER, arrival, hostile, sent_through_every_door

#: A word split by each invisible character that is no format character (the search for
#: ``password`` it would escape), a payload hidden one byte per variation selector, a run of
#: joiners, and a black flag carrying seven hidden ASCII characters.
HIDDEN = (
    "pass\u034fword pass\u3164word pass\u115fword pass\ufe0fword pass\U000e0100word "
    "ok\ufe01\U000e0159\U000e0157 x\u200d\u200d\u200cy \U0001f3f4\U000e0069\U000e0067"
    "\U000e006e\U000e006f\U000e0072\U000e0065\U000e0020\U000e007f"
)
SHOWN = (
    "pass\\u034fword pass\\u3164word pass\\u115fword pass\\ufe0fword pass\\U000e0100word "
    "ok\\ufe01\\U000e0159\\U000e0157 x\\u200d\\u200d\\u200cy \U0001f3f4\\U000e0069\\U000e0067"
    "\\U000e006e\\U000e006f\\U000e0072\\U000e0065\\U000e0020\\U000e007f"
)
#: Persian with its non-joiner, a family emoji, the flag of Scotland, an ideographic variant.
ORDINARY = (
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f468\u200d\U0001f469\u200d\U0001f467 "
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f \u845b\U000e0100"
)


async def test_invisible_characters_arrive_escaped_through_every_door(tmp_path: Path) -> None:
    """From a log call, print, stderr, the file descriptors, a warning and an exception's
    traceback, each invisible character out of place shows as its escape."""
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, HIDDEN)
    for door, records in arrived.items():
        text = "\n".join(FORMATTER.format(record) for record in records)
        assert SHOWN in text, (door, text)
        for char in "\u034f\u3164\u115f\ufe0f\ufe01\U000e0100\U000e0159\U000e0020":
            assert char not in text, (door, hex(ord(char)), text)


async def test_ordinary_text_spelt_with_invisible_characters_arrives_whole(
    tmp_path: Path,
) -> None:
    """Persian, emoji sequences, a subdivision flag and an ideographic variant pass as sent."""
    async with hostile(tmp_path) as (host, waiter):
        arrived = await sent_through_every_door(host, waiter, ORDINARY)
    for door, records in arrived.items():
        text = "\n".join(FORMATTER.format(record) for record in records)
        assert ORDINARY in text, (door, text)


async def test_look_alike_logger_names_stay_apart_and_visible(tmp_path: Path) -> None:
    """``db`` and ``db`` followed by a grapheme joiner, or by a hidden payload, are told
    apart; a component of one Hangul filler does not look empty."""
    names = {
        "db": "plugin.hostile.db",
        "db\u034f": "plugin.hostile.db_",
        "db\ufe0f\U000e0159\U000e0157": "plugin.hostile.db_",
        "evil.\u3164": "plugin.hostile.evil._",
    }
    async with hostile(tmp_path) as (host, waiter):
        for number, name in enumerate(names):
            await host.call("hostile", "log_as", logger=name, text=f"name-{number}-sent")
        records = [(await arrival(waiter, f"name-{number}-sent"))[0] for number in range(4)]
    assert [record.name for record in records] == list(names.values())
