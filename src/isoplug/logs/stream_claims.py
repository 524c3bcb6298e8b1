"""Which of isoplug's capture flags on a record of an output stream the receiver believes.

isoplug's line capture, in the emitting process, sets two flags on the records it makes of
printed lines (:mod:`isoplug.logs.stream_lines`, :mod:`isoplug.logs.textlines`):
``truncated`` on a line it cut, and ``isoplug_truncated_keys`` (how many fields of a JSON
line it left out). They arrive under those names only on records of an output stream's
logger (``stdout``, ``plugin.x.stderr``); anywhere else a sender's extra so named is renamed
``extra_<name>``.

But everything a sender sends is its claim: plugin code runs in the emitting process, and can
build a record of the capture's own class (:class:`~isoplug.logs.capture.CapturedLineRecord`)
and hand it to the ``stdout`` logger, with any flags it likes. So on those records too the
flags are the sender's claims about its own lines, and the receiver believes them only as far
as the capture could have set them:

- ``truncated`` as ``False`` (a claim that costs nothing), and as ``True`` only on a record
  whose message shows a capture's cut: a line ending with the mark the emitting process puts
  where it cut (:func:`~isoplug.wire.sanitize.cut_mark` with ``IN_EMITTING_PROCESS``), or
  the one the host's capture of a runner's file descriptors puts
  (:mod:`isoplug.host.stdio_lines`: ``... [truncated N bytes]``), whose records are replayed
  the same way. A cut line ends with it; a block (a traceback) holding a cut line has it at
  the end of that line.
- ``isoplug_truncated_keys`` only as a count a line could need: a positive ``int`` no larger
  than the fields a line of :data:`~isoplug.logs.stream_lines.MAX_LINE_CHARS` characters can
  hold (each field takes 5 characters at least: ``"":0,``; the host's fd-level lines are no
  longer, 16 KiB, and a line that parses as JSON has no more characters than bytes).

Any other value arrives renamed ``extra_<name>``, as the same claim on any other logger does:
nothing is lost, and the flags the host hands on mean what the capture means by them.
"""

from __future__ import annotations

import re
from typing import Any

from isoplug.logs.record_names import TRUNCATED_KEYS
from isoplug.logs.stream_lines import MAX_LINE_CHARS
from isoplug.wire.sanitize import IN_EMITTING_PROCESS

__all__ = ["CUT_FLAG", "MAX_LINE_FIELDS", "UNCUT_FD_LINE", "believed_stream_flags"]

#: isoplug's flag on a printed line its capture cut.
CUT_FLAG = "truncated"
#: The extras of a record the host's own capture of a runner's file descriptors made of a line
#: it did not cut (:mod:`isoplug.host.stdio_replay`): one shared dict, never mutated, that the
#: receiver knows by its identity and stamps as ``truncated = False`` without cleaning it
#: (most of a flood's lines are such). Never a sender's: nothing decoded from the wire is this
#: object.
UNCUT_FD_LINE: dict[str, Any] = {CUT_FLAG: False}
#: The most fields a printed line can hold: what a count of those left out is believed up to.
MAX_LINE_FIELDS = MAX_LINE_CHARS // 5

#: A capture's mark at the end of a line it cut (at a line's end: in a block too): the
#: emitting process's, or the host's fd-level capture's.
_CUT_LINE_END = re.compile(
    r"\.\.\. \[truncated [1-9][0-9]{0,14} "
    r"(?:characters" + re.escape(IN_EMITTING_PROCESS) + r"|bytes)\]$",
    re.MULTILINE,
)

_NONE: frozenset[str] = frozenset()
_CUT = frozenset({CUT_FLAG})
_KEYS = frozenset({TRUNCATED_KEYS})
_BOTH = _CUT | _KEYS


def believed_stream_flags(extra: dict[str, Any], message: str) -> frozenset[str]:
    """Of the flags in a sender's ``extra`` for an output stream's record with ``message``
    (as sent), those the capture could have set as they are."""
    flag = extra.get(CUT_FLAG)
    cut = flag is False or (flag is True and _CUT_LINE_END.search(message) is not None)
    count = extra.get(TRUNCATED_KEYS)
    keys = type(count) is int and 0 < count <= MAX_LINE_FIELDS
    if cut:
        return _BOTH if keys else _CUT
    return _KEYS if keys else _NONE
