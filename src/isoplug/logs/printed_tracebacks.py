"""A traceback printed as text becomes a structured exception again.

A plugin that calls ``traceback.print_exc()``, a library that prints what it caught, a child
process that dies of an uncaught exception: each prints a traceback, and
:class:`~isoplug.logs.textlines.LineClassifier` groups it into one ERROR record. Text alone is
what most formatters show, but not what every consumer reads: OpenTelemetry's ``LoggingHandler``
writes ``exception.type``, ``exception.message`` and ``exception.stacktrace`` only from
``record.exc_info``, structlog's ``format_exc_info`` and python-json-logger likewise. So
:func:`parse_printed_traceback` reads the text back into the
:class:`~isoplug.wire.ExceptionData` a logged exception would have had, which the receiver
rebuilds into a genuine ``exc_info`` (:mod:`isoplug.logs.tracebacks`) as it does any other.

What it reads is what :mod:`traceback` prints: an optional header Python prints before a
traceback (``Exception in thread ...:``, ``Exception ignored in: ...``), then one or more
exceptions joined by the lines that chain them (a cause, a context), each with its
``Traceback (most recent call last):`` and frames (``File "...", line N, in name``, the source
line, ``[Previous line repeated N more times]``), or with no traceback at all (an exception
that was never raised, as a cause), then its exception line (``module.Type: message``, and any
further lines of the message or notes). An exception group is read as Python draws it
(``+ Exception Group Traceback``, each member after its ``+---- N ----`` line, every line of a
member behind the ``|`` margin of its depth), its members each with their own chains, nested
groups included.

The record then says what such a record says when the plugin logs an exception: its message is
the header, or else the exception's first line (``ValueError: boom``, what an error tracker
titles it by); its ``exc_info`` holds the rest.

Nothing is lost by reading: the parse is accepted only when printing what it read, as Python
would print it, gives back the text exactly, save the lines the rebuilt traceback reads from the
source file itself (a frame's second and later source lines, the carets under a line: the
rebuilt frames carry no columns, so they print no carets). Anything else is left as text, whole:
a block cut in parts, a ``SyntaxError`` (its display is not a frame), a group past the 15
members or 10 levels Python draws (``and 5 more exceptions``), a traceback whose text does not
follow Python's format, one whose frames or exceptions exceed what a record carries. And
since a rebuilt frame prints its source line from the file, never from the text (a plugin
must not be able to forge the lines of a file), :func:`read_back` keeps as text a traceback
whose source lines are not what the files say now (a file this process cannot read, one
changed since).

What cannot be told from text:

- a message line from a note: both are lines after the exception line, so they are the
  message here (after a type printed with no message, they are one note);
- a type's module when Python printed none: ``builtins`` for a builtin exception's name, else
  ``__main__`` (either prints the same);
- a qualified type's nesting: ``a.b.C`` is class ``C`` of module ``a.b`` (which prints the same).

Nothing here sanitizes: the text is the plugin's, and the receiver cleans the rebuilt
exception's texts as it cleans any sender's.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import threading
import time
import traceback
import types

from isoplug.logs.exceptions import (
    MAX_DEPTH,
    MAX_EXCEPTIONS,
    MAX_FRAMES,
    MAX_MESSAGE_CHARS,
    ExcInfo,
)
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import ExceptionData, FrameData

__all__ = [
    "READ_BACK_BURST",
    "READ_BACK_RATE",
    "PrintedTraceback",
    "ReadBackBudget",
    "parse_printed_traceback",
    "read_back",
    "shows_the_printed_source",
]

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
#: Text longer than this is not read back (a record's message is capped below it anyway).
MAX_PARSED_CHARS = 4 * MAX_MESSAGE_CHARS


#: Printed tracebacks read back per second, at most, per process that reads them (a runner,
#: for its records; the host, per runner, for fd-level output), after a burst of this many: a
#: read-back costs about what the print_exc() that printed it did, and a program printing
#: tracebacks in a loop must not double its cost (nor take the host's CPU). Past it, they
#: stay text, whole.
READ_BACK_RATE = 100.0
READ_BACK_BURST = 100.0


class ReadBackBudget:
    """A token bucket of :data:`READ_BACK_RATE` read-backs a second; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens = READ_BACK_BURST
        self._refilled = time.monotonic()

    def take(self) -> bool:
        """True if one more read-back may be done now."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(
                READ_BACK_BURST, self._tokens + (now - self._refilled) * READ_BACK_RATE
            )
            self._refilled = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


@dataclasses.dataclass(frozen=True, slots=True)
class PrintedTraceback:
    """What a printed traceback says: the record's message and its exception."""

    message: str
    exception: ExceptionData


@dataclasses.dataclass(slots=True)
class _Printed:
    """One exception as printed: its frames (None: no traceback printed), its text, and for
    a group its members (each a chain: the member last, what it was chained to before it)."""

    frames: list[FrameData] | None
    type_text: str
    text: str
    #: Lines after a bare type (no message): its notes, as one.
    notes: str | None = None
    #: How it links to the exception printed after it: "cause", "context" or "" (the last).
    link: str = ""
    members: list[list[_Printed]] | None = None


def read_back(text: str, rebuilder: ExceptionRebuilder) -> tuple[PrintedTraceback, ExcInfo] | None:
    """A printed traceback's record and its exception rebuilt by ``rebuilder``, when the
    rebuilt exception prints as the text did, source lines included; None when the text is to
    stay text. Raises what :meth:`ExceptionRebuilder.rebuild` raises (a Python whose code
    objects isoplug cannot build): the caller says so."""
    printed = parse_printed_traceback(text)
    if printed is None:
        return None
    exc_info = rebuilder.rebuild(printed.exception)
    if not shows_the_printed_source(printed.exception, exc_info[1]):
        return None
    return printed, exc_info


def parse_printed_traceback(text: str) -> PrintedTraceback | None:
    """The record a printed traceback makes, or None when ``text`` is not one Python printed
    (see the module docstring): the caller then keeps it as text."""
    if len(text) > MAX_PARSED_CHARS or _TRACEBACK_START not in text:
        return None
    lines = text.split("\n")
    header = lines[0] if lines[0].startswith(_HEADERS) else None
    reader = _Reader(lines, 1 if header is not None else 0)
    chain = reader.chain(0)
    if chain is None or reader.at < len(lines) or reader.exceptions > MAX_EXCEPTIONS:
        return None
    rendered: list[str] = [] if header is None else [header]
    _render_chain(chain, _Context(), rendered)
    if rendered != reader.kept:
        return None
    exception = _chain_data(chain)
    last = chain[-1]
    first_line = (last.type_text + ": " + last.text if last.text else last.type_text).split("\n")[0]
    message = header if header is not None else first_line
    return PrintedTraceback(message, exception)


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

    def chain(self, depth: int) -> list[_Printed] | None:
        """Exceptions joined by the lines that chain them, printed at group ``depth``."""
        printed: list[_Printed] = []
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

    def _exception(self, depth: int) -> _Printed | None:
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

    def _group(self, depth: int, with_traceback: bool) -> _Printed | None:
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

    def _members(self, depth: int) -> list[list[_Printed]] | None:
        members: list[list[_Printed]] = []
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
    ) -> _Printed | None:
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
            return _Printed(frames, type_text, "", "\n".join(text_lines[1:]))
        return _Printed(frames, type_text, "\n".join(text_lines))

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


def _render_chain(chain: list[_Printed], context: _Context, out: list[str]) -> None:
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


def _render_text(each: _Printed, margin: str, out: list[str]) -> None:
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


def _chain_data(chain: list[_Printed]) -> ExceptionData:
    """The last exception of ``chain``, each linked to the one printed before it."""
    exception: ExceptionData | None = None
    link = ""
    for each in chain:
        exception = _exception_data(each, exception, link)
        link = each.link
    assert exception is not None
    return exception


def _exception_data(printed: _Printed, before: ExceptionData | None, link: str) -> ExceptionData:
    """``printed`` as the sender's exception, ``before`` (printed above it) linked by ``link``."""
    module, _, name = printed.type_text.rpartition(".")
    if not module:
        # Python leaves out the module of builtins and __main__; both print the same.
        known = getattr(builtins, name, None)
        builtin = isinstance(known, type) and issubclass(known, BaseException)
        module = "builtins" if builtin else "__main__"
    return ExceptionData(
        type_name=name,
        module=module,
        message=printed.text,
        frames=printed.frames or [],
        notes=[] if printed.notes is None else [printed.notes],
        cause=before if link == "cause" else None,
        context=before if link == "context" else None,
        # What `raise ... from` sets: the context a cause replaces is not printed.
        suppress_context=link == "cause",
        members=[_chain_data(member) for member in printed.members or []],
    )


def shows_the_printed_source(exception: ExceptionData, value: BaseException) -> bool:
    """Whether ``value``, rebuilt from ``exception``, prints each frame's source line as it was
    printed: the rebuilt frames read their lines from the files (through the receiver's guard,
    :mod:`isoplug.logs.sourcelines`), never from the text, so a file this process cannot read,
    or one changed since (a hot reload), would show other lines, or none, where the text had
    them. The caller then keeps the text."""
    pending: list[tuple[ExceptionData, BaseException | None]] = [(exception, value)]
    while pending:
        data, error = pending.pop()
        if error is None:
            return False
        tb: types.TracebackType | None = error.__traceback__
        shown = [frame.line or "" for frame in traceback.extract_tb(tb)]
        if shown != [frame.line for frame in data.frames]:
            return False
        if data.cause is not None:
            pending.append((data.cause, error.__cause__))
        if data.context is not None:
            pending.append((data.context, error.__context__))
        members = list(getattr(error, "exceptions", ()))
        if len(members) != len(data.members):
            return False
        pending += zip(data.members, members, strict=True)
    return True
