"""A plugin method's chained exception as the host shows it (``RemoteError.remote_traceback``):
sanitized, no line of the plugin's at column 0 but the first header, and each part of the chain
laid out as Python prints it: its header left of its frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug.errors import RemoteError
from isoplug.wire.sanitize import clean_block
from tests.plugins_fixtures import running


def layout(text: str) -> list[tuple[int, str]]:
    """Each line's indentation and what it is (a header, a frame, a chain line...)."""
    kinds = {
        "Traceback (most recent call last):": "header",
        "File ": "frame",
        "The above exception": "chain",
        "ValueError": "exception",
        "raiser_plugin.PluginError": "exception",
    }
    shown = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        kind = next((k for start, k in kinds.items() if stripped.startswith(start)), None)
        if kind is not None:
            shown.append((len(line) - len(stripped), kind))
    return shown


async def test_a_chained_tracebacks_later_header_is_left_of_its_frames(tmp_path: Path) -> None:
    async with running(tmp_path, "raiser") as (host, _):
        with pytest.raises(RemoteError) as failed:
            await host.call("raiser", "fail_chained")
    assert failed.value.remote_type == "raiser_plugin.PluginError"
    # Python's layout, the whole chain after its first line moved right by two: the first
    # header stays where formatters expect it, and no other line is at column 0.
    assert layout(failed.value.remote_traceback) == [
        (0, "header"),
        (2, "frame"),
        (2, "frame"),
        (2, "exception"),
        (2, "chain"),
        (2, "header"),
        (4, "frame"),
        (4, "frame"),
        (2, "exception"),
    ], failed.value.remote_traceback


def test_a_chained_block_cut_short_keeps_the_layout() -> None:
    """A chain cut by the limit: what is left is laid out the same, within the limit."""
    part = 'Traceback (most recent call last):\n  File "a.py", line 1, in f\n    g()\n'
    text = f"{part}ValueError: x\n\nDuring handling of the above exception, another exception "
    text += f"occurred:\n\n{part * 40}KeyError: 'y'\n"
    cut = clean_block(text, 300)
    body = cut.rpartition("\n")[0]
    assert len(body) <= 300 and cut.endswith("characters]"), cut
    after = layout(body.partition("occurred:\n")[2])
    assert set(after) == {(2, "header"), (4, "frame")}, cut
