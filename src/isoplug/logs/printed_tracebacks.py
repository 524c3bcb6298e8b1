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
further lines of the message or notes).

The record then says what such a record says when the plugin logs an exception: its message is
the header, or else the exception's first line (``ValueError: boom``, what an error tracker
titles it by); its ``exc_info`` holds the rest.

Nothing is lost by reading: the parse is accepted only when printing what it read, as Python
would print it, gives back the text exactly, save the lines the rebuilt traceback reads from the
source file itself (a frame's second and later source lines, the carets under a line: the
rebuilt frames carry no columns, so they print no carets). Anything else is left as text, whole:
a block cut in parts, an exception group, a ``SyntaxError`` (its display is not a frame), a
traceback whose text does not follow Python's format, one whose frames exceed what a record
carries.

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

from isoplug.logs.exceptions import MAX_DEPTH, MAX_FRAMES, MAX_MESSAGE_CHARS
from isoplug.wire import ExceptionData, FrameData

__all__ = ["PrintedTraceback", "parse_printed_traceback"]

_TRACEBACK_START = "Traceback (most recent call last):"
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
_FRAME = re.compile(r'  File "(?P<file>.*)", line (?P<line>\d+|None), in (?P<name>.*)')
_REPEATED = re.compile(r"  \[Previous line repeated (?P<count>\d+) more times?\]")
# A line of carets under a source line: 3.11+ prints ``^`` for the failing part, ``~`` around.
_CARETS = re.compile(r"    [ ~^]*\^[ ~^]*")
_EXCEPTION_LINE = re.compile(r"(?P<type>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:: |$)", re.ASCII)
#: Python prints this many identical frames in a row before it counts the rest.
_RECURSIVE_CUTOFF = 3
#: Text longer than this is not read back (a record's message is capped below it anyway).
MAX_PARSED_CHARS = 4 * MAX_MESSAGE_CHARS


@dataclasses.dataclass(frozen=True, slots=True)
class PrintedTraceback:
    """What a printed traceback says: the record's message and its exception."""

    message: str
    exception: ExceptionData


@dataclasses.dataclass(slots=True)
class _Printed:
    """One exception as printed: its frames (None: no traceback printed) and its text."""

    frames: list[FrameData] | None
    type_text: str
    text: str
    #: Lines after a bare type (no message): its notes, as one.
    notes: str | None = None
    #: How it links to the exception printed after it: "cause", "context" or "" (the last).
    link: str = ""


def parse_printed_traceback(text: str) -> PrintedTraceback | None:
    """The record a printed traceback makes, or None when ``text`` is not one Python printed
    (see the module docstring): the caller then keeps it as text."""
    if len(text) > MAX_PARSED_CHARS or _TRACEBACK_START not in text:
        return None
    lines = text.split("\n")
    header = lines[0] if lines[0].startswith(_HEADERS) else None
    reader = _Reader(lines, 1 if header is not None else 0)
    printed = reader.exceptions()
    if printed is None or len(printed) > MAX_DEPTH:
        return None
    if _render(header, printed) != "\n".join(reader.kept):
        return None
    exception: ExceptionData | None = None
    link = ""
    for each in printed:
        exception = _exception_data(each, exception, link)
        link = each.link
    assert exception is not None
    last = printed[-1]
    first_line = (last.type_text + ": " + last.text if last.text else last.type_text).split("\n")[0]
    message = header if header is not None else first_line
    return PrintedTraceback(message, exception)


class _Reader:
    """Reads the exceptions of a block's lines from ``start``; ``kept`` holds every line read
    that printing the result gives back (all but the source lines and carets it drops)."""

    def __init__(self, lines: list[str], start: int) -> None:
        self.lines = lines
        self.at = start
        self.kept = lines[:start]

    def exceptions(self) -> list[_Printed] | None:
        printed: list[_Printed] = []
        while True:
            one = self._exception()
            if one is None:
                return None
            printed.append(one)
            link = self._link()
            if link is None:
                return printed if self.at >= len(self.lines) else None
            one.link = link

    def _take(self) -> str:
        line = self.lines[self.at]
        self.kept.append(line)
        self.at += 1
        return line

    def _exception(self) -> _Printed | None:
        lines = self.lines
        frames: list[FrameData] | None = None
        if self.at < len(lines) and lines[self.at] == _TRACEBACK_START:
            self._take()
            frames = self._frames()
            if frames is None:
                return None
        if self.at >= len(lines):
            return None
        matched = _EXCEPTION_LINE.match(lines[self.at])
        if matched is None:
            return None
        first = self._take()
        type_text = matched["type"]
        text_lines = [first[matched.end() :]]
        while self.at < len(lines) and not self._at_link():
            text_lines.append(self._take())
        if first == type_text and len(text_lines) > 1:
            # No message, and lines after the type: notes (Python prints "Type: message"
            # whenever str() is not empty).
            return _Printed(frames, type_text, "", "\n".join(text_lines[1:]))
        return _Printed(frames, type_text, "\n".join(text_lines))

    def _frames(self) -> list[FrameData] | None:
        lines = self.lines
        frames: list[FrameData] = []
        while self.at < len(lines):
            line = lines[self.at]
            frame = _FRAME.fullmatch(line)
            if frame is not None:
                self._take()
                source = ""
                while self.at < len(lines) and lines[self.at].startswith("    "):
                    # The first source line is the frame's; the carets and the lines after it
                    # (3.13 prints every line of a multi-line expression) come back from the file.
                    if not source and _CARETS.fullmatch(lines[self.at]) is None:
                        source = self._take()[4:]
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
            repeated = _REPEATED.fullmatch(line)
            if repeated is None:
                break
            count = int(repeated["count"])
            if not frames or len(frames) + count > MAX_FRAMES:
                return None
            self._take()
            frames.extend([frames[-1]] * count)
        return frames

    def _at_link(self) -> bool:
        lines, at = self.lines, self.at
        return (
            lines[at] == ""
            and at + 2 < len(lines)
            and lines[at + 1] in (_CAUSE, _CONTEXT)
            and lines[at + 2] == ""
        )

    def _link(self) -> str | None:
        if self.at >= len(self.lines):
            return None
        self._take()
        link = "cause" if self._take() == _CAUSE else "context"
        self._take()
        return link


def _render(header: str | None, printed: list[_Printed]) -> str:
    """What Python prints for these exceptions (frames with only the source lines read)."""
    out: list[str] = [] if header is None else [header]
    for each in printed:
        if each.frames is not None:
            out.append(_TRACEBACK_START)
            _render_frames(each.frames, out)
        out.append(each.type_text + ": " + each.text if each.text else each.type_text)
        if each.notes is not None:
            out.append(each.notes)
        if each.link:
            out += ["", _CAUSE if each.link == "cause" else _CONTEXT, ""]
    return "\n".join(out)


def _render_frames(frames: list[FrameData], out: list[str]) -> None:
    # traceback.StackSummary.format's rule: past three identical frames in a row, count them
    # (a frame without a line number is like no other).
    last: tuple[str, int | None, str] | None = None
    count = 0
    for frame in frames:
        key = (frame.filename, frame.lineno, frame.name)
        if key != last or frame.lineno is None:
            _render_repeats(count, out)
            last, count = key, 0
        count += 1
        if count > _RECURSIVE_CUTOFF:
            continue
        lineno = "None" if frame.lineno is None else str(frame.lineno)
        out.append(f'  File "{frame.filename}", line {lineno}, in {frame.name}')
        if frame.line:
            out.append("    " + frame.line)
    _render_repeats(count, out)


def _render_repeats(count: int, out: list[str]) -> None:
    extra = count - _RECURSIVE_CUTOFF
    if extra > 0:
        out.append(f"  [Previous line repeated {extra} more time{'s' if extra > 1 else ''}]")


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
    )
