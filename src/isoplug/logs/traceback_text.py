"""The text of a traceback as Python prints it, read and printed again.

:func:`read_printed` reads what :mod:`traceback` prints (``TracebackException.format``): an
optional header: what Python prints before a traceback (``Exception in thread ...:``,
``Exception ignored in: ...``), or any line right above a ``Traceback (most recent call
last):`` (the message :mod:`logging` writes there for ``log.exception("failed")``); then one
or more exceptions joined by the lines that chain them (a cause, a context), each with its
``Traceback (most recent call last):`` and frames (``File "...", line N, in name``, the
source line, ``[Previous line repeated N more times]``), or with no traceback at all (an
exception that was never raised, as a cause), then its exception line (``module.Type:
message``, and any further lines of the message or notes). An exception group
is read as Python draws it (``+ Exception Group Traceback``, each member after its ``+---- N
----`` line, every line of a member behind the ``|`` margin of its depth), its members each
with their own chains, nested groups included.

A reading is accepted only when printing it again, by a port of ``TracebackException.format``
for what a text can hold, gives back the text exactly, save the lines a rebuilt traceback reads
from the source file itself (a frame's second and later source lines, the carets under a line).
So a reading never loses a line: whatever it cannot account for makes it decline.

Pure text: :mod:`isoplug.logs.printed_tracebacks` turns a reading into an exception.
"""

from __future__ import annotations

import dataclasses
import re

from isoplug.logs.exceptions import MAX_DEPTH, MAX_EXCEPTIONS, MAX_FRAMES
from isoplug.wire import FrameData

__all__ = ["Printed", "read_printed"]

_TRACEBACK_START = "Traceback (most recent call last):"
_GROUP_TRACEBACK_START = "Exception Group " + _TRACEBACK_START
#: The line that closes the drawing of a group's members.
_CLOSING = "+" + "-" * 36
#: What Python prints before a traceback, on the line above it (threading's excepthook, the
#: unraisable hook, _thread's): the record's message when present.
_HEADERS = (
    "Exception in thread ",
    "Exception ignored in: ",
    "Exception ignored in ",
    "Unhandled exception in thread started by ",
)
_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"
# At most 9 digits: int() refuses over 4,300, and no file has a billion lines.
_FRAME = re.compile(r'  File "(?P<file>.*)", line (?P<line>\d{1,9}|None), in (?P<name>.*)')
_REPEATED = re.compile(r"  \[Previous line repeated (?P<count>\d{1,9}) more times?\]")
_EXCEPTION_LINE = re.compile(r"(?P<type>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:: |$)", re.ASCII)
#: Python prints this many identical frames in a row before it counts the rest.
_RECURSIVE_CUTOFF = 3


@dataclasses.dataclass(slots=True)
class Printed:
    """One exception as printed: its frames (None: no traceback printed), its text, and for
    a group its members (each a chain: the member last, what it was chained to before it)."""

    frames: list[FrameData] | None
    type_text: str
    text: str
    #: Lines after a bare type (no message): its notes, as one.
    notes: str | None = None
    #: How it links to the exception printed after it: "cause", "context" or "" (the last).
    link: str = ""
    members: list[list[Printed]] | None = None


def read_printed(text: str) -> tuple[str | None, list[Printed]] | None:
    """The header (None if there is none) and the exceptions of a printed traceback, the last
    printed last; None when ``text`` is not one Python printed (see the module docstring)."""
    if _TRACEBACK_START not in text:
        return None
    lines = text.split("\n")
    first = lines[0]
    led = len(lines) > 1 and first != _TRACEBACK_START and _starts_traceback(lines[1])
    header = first if led or first.startswith(_HEADERS) else None
    reader = _Reader(lines, 1 if header is not None else 0)
    chain = reader.chain(0)
    if chain is None or reader.at < len(lines) or reader.exceptions > MAX_EXCEPTIONS:
        return None
    rendered: list[str] = [] if header is None else [header]
    _render_chain(chain, _Context(), rendered)
    if rendered != reader.kept:
        return None
    return header, chain


def _starts_traceback(line: str) -> bool:
    return line == _TRACEBACK_START or line.lstrip(" +") == _GROUP_TRACEBACK_START


def _margin(depth: int, mark: str = "|") -> str:
    """What Python prints before each line of an exception group's part at ``depth``."""
    return "  " * depth + mark + " " if depth else ""


class _Reader:
    """Reads exceptions from a block's lines, from ``start``; ``kept`` holds every line read
    that printing the result gives back (all but the source lines and carets it drops)."""

    def __init__(self, lines: list[str], start: int) -> None:
        self.lines = lines
        self.at = start
        self.kept = lines[:start]
        self.exceptions = 0

    def _peek(self) -> str | None:
        return self.lines[self.at] if self.at < len(self.lines) else None

    def _take(self) -> str:
        line = self.lines[self.at]
        self.kept.append(line)
        self.at += 1
        return line

    def chain(self, depth: int) -> list[Printed] | None:
        """Exceptions joined by the lines that chain them, printed at group ``depth``."""
        printed: list[Printed] = []
        while True:
            self.exceptions += 1
            if self.exceptions > MAX_EXCEPTIONS or depth > MAX_DEPTH:
                return None
            one = self._exception(depth)
            if one is None:
                return None
            printed.append(one)
            link = self._link(depth)
            if link is None:
                return printed
            one.link = link

    def _link(self, depth: int) -> str | None:
        margin = _margin(depth)
        lines, at = self.lines, self.at
        if at + 2 >= len(lines) or lines[at] != margin or lines[at + 2] != margin:
            return None
        between = lines[at + 1][len(margin) :] if lines[at + 1].startswith(margin) else ""
        if between not in (_CAUSE, _CONTEXT):
            return None
        for _ in range(3):
            self._take()
        return "cause" if between == _CAUSE else "context"

    def _exception(self, depth: int) -> Printed | None:
        line = self._peek()
        if line is None:
            return None
        if depth == 0 and line.startswith(("  + ", "  | ")):
            return self._group(1, line.startswith("  + "))
        margin = _margin(depth)
        if line == margin + _GROUP_TRACEBACK_START:
            return self._group(depth, True)
        frames: list[FrameData] | None = None
        if line == margin + _TRACEBACK_START:
            self._take()
            frames = self._frames(margin)
            if frames is None:
                return None
        one = self._exception_text(margin, depth, frames)
        if one is None or not self._at_separator(depth):
            return one
        # A group printed without a traceback (never raised: a cause, a member): its members
        # follow its line.
        one.members = self._members(depth)
        return one if one.members is not None else None

    def _group(self, depth: int, with_traceback: bool) -> Printed | None:
        frames: list[FrameData] | None = None
        if with_traceback:
            self._take()
            frames = self._frames(_margin(depth))
            if frames is None:
                return None
        one = self._exception_text(_margin(depth), depth, frames)
        if one is None or not self._at_separator(depth):
            return None
        one.members = self._members(depth)
        return one if one.members is not None else None

    def _at_separator(self, depth: int) -> bool:
        return depth > 0 and self._peek() == _separator(depth, 0)

    def _members(self, depth: int) -> list[list[Printed]] | None:
        members: list[list[Printed]] = []
        while self._peek() == _separator(depth, len(members)):
            self._take()
            member = self.chain(depth + 1)
            if member is None:
                return None
            members.append(member)
        if self._peek() == "  " * (depth + 1) + _CLOSING:
            self._take()
        return members

    def _exception_text(
        self, margin: str, depth: int, frames: list[FrameData] | None
    ) -> Printed | None:
        line = self._peek()
        if line is None or not line.startswith(margin):
            return None
        matched = _EXCEPTION_LINE.match(line, len(margin))
        if matched is None:
            return None
        self._take()
        type_text = matched["type"]
        text_lines = [line[matched.end() :]]
        while (
            (line := self._peek()) is not None
            and line.startswith(margin)
            and (depth == 0 or not self._at_separator(depth))
            and not self._at_link(margin)
        ):
            text_lines.append(self._take()[len(margin) :])
        if matched.end() == len(margin) + len(type_text) and len(text_lines) > 1:
            # No message, and lines after the type: notes (Python prints "Type: message"
            # whenever str() is not empty).
            return Printed(frames, type_text, "", "\n".join(text_lines[1:]))
        return Printed(frames, type_text, "\n".join(text_lines))

    def _at_link(self, margin: str) -> bool:
        lines, at = self.lines, self.at
        return (
            lines[at] == margin
            and at + 2 < len(lines)
            and lines[at + 1][len(margin) :] in (_CAUSE, _CONTEXT)
            and lines[at + 1].startswith(margin)
            and lines[at + 2] == margin
        )

    def _frames(self, margin: str) -> list[FrameData] | None:
        lines = self.lines
        frames: list[FrameData] = []
        source_margin = margin + "    "
        while self.at < len(lines):
            line = lines[self.at]
            if not line.startswith(margin):
                break
            frame = _FRAME.fullmatch(line, len(margin))
            if frame is not None:
                self._take()
                source = ""
                while self.at < len(lines) and lines[self.at].startswith(source_margin):
                    # The first source line is the frame's; the carets and the lines after it
                    # (3.13 prints every line of a multi-line expression) come back from the file.
                    below = lines[self.at][len(margin) :]
                    if not source and not _carets(below):
                        source = self._take()[len(source_margin) :]
                    else:
                        self.at += 1
                lineno = frame["line"]
                frames.append(
                    FrameData(
                        filename=frame["file"],
                        lineno=None if lineno == "None" else int(lineno),
                        name=frame["name"],
                        line=source,
                    )
                )
                continue
            repeated = _REPEATED.fullmatch(line, len(margin))
            if repeated is None:
                break
            count = int(repeated["count"])
            if not frames or len(frames) + count > MAX_FRAMES:
                return None
            self._take()
            frames.extend([frames[-1]] * count)
        return frames


def _carets(line: str) -> bool:
    """A line of carets under a source line: 3.11+ prints ``^`` under the failing part and
    ``~`` around it. (Not a regular expression: one over a long line of ``~^`` that ends in
    anything else backtracks for seconds.)"""
    return line.startswith("    ") and "^" in line and not line.strip(" ~^")


def _separator(depth: int, index: int) -> str:
    """The line Python prints before member ``index`` of a group at ``depth``."""
    lead = "+-" if index == 0 else "  "
    return "  " * depth + lead + f"+---------------- {index + 1} " + "-" * 16


@dataclasses.dataclass(slots=True)
class _Context:
    """traceback's _ExceptionPrintContext: where printing is in the groups' nesting."""

    depth: int = 0
    need_close: bool = False


def _render_chain(chain: list[Printed], context: _Context, out: list[str]) -> None:
    """What Python prints for these exceptions (frames with only the source lines read):
    traceback.TracebackException.format, for what a text can hold."""
    for index, each in enumerate(chain):
        if index:
            margin = _margin(context.depth)
            link = _CAUSE if chain[index - 1].link == "cause" else _CONTEXT
            out += [margin, margin + link, margin]
        if each.members is None:
            margin = _margin(context.depth)
            if each.frames:
                out.append(margin + _TRACEBACK_START)
                _render_frames(each.frames, margin, out)
            _render_text(each, margin, out)
            continue
        toplevel = context.depth == 0
        if toplevel:
            context.depth = 1
        margin = _margin(context.depth)
        if each.frames:
            out.append(_margin(context.depth, "+" if toplevel else "|") + _GROUP_TRACEBACK_START)
            _render_frames(each.frames, margin, out)
        _render_text(each, margin, out)
        context.need_close = False
        for number, member in enumerate(each.members):
            last = number == len(each.members) - 1
            if last:
                context.need_close = True
            out.append(_separator(context.depth, number))
            context.depth += 1
            _render_chain(member, context, out)
            if last and context.need_close:
                out.append("  " * context.depth + _CLOSING)
                context.need_close = False
            context.depth -= 1
        if toplevel:
            context.depth = 0


def _render_text(each: Printed, margin: str, out: list[str]) -> None:
    text = each.type_text + ": " + each.text if each.text else each.type_text
    if each.notes is not None:
        text += "\n" + each.notes
    out += [margin + line for line in text.split("\n")]


def _render_frames(frames: list[FrameData], margin: str, out: list[str]) -> None:
    # traceback.StackSummary.format's rule: past three identical frames in a row, count them
    # (a frame without a line number is like no other).
    last: tuple[str, int | None, str] | None = None
    count = 0
    for frame in frames:
        key = (frame.filename, frame.lineno, frame.name)
        if key != last or frame.lineno is None:
            _render_repeats(count, margin, out)
            last, count = key, 0
        count += 1
        if count > _RECURSIVE_CUTOFF:
            continue
        lineno = "None" if frame.lineno is None else str(frame.lineno)
        out.append(f'{margin}  File "{frame.filename}", line {lineno}, in {frame.name}')
        if frame.line:
            out.append(margin + "    " + frame.line)
    _render_repeats(count, margin, out)


def _render_repeats(count: int, margin: str, out: list[str]) -> None:
    extra = count - _RECURSIVE_CUTOFF
    if extra > 0:
        out.append(
            f"{margin}  [Previous line repeated {extra} more time{'s' if extra > 1 else ''}]"
        )
