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

What it reads is what :mod:`traceback` prints, chains, notes and exception groups included
(:mod:`isoplug.logs.traceback_text`, which declines anything it cannot print back exactly),
coloured too: Python 3.13+ colours a traceback on a pipe when ``PYTHON_COLORS`` or
``FORCE_COLOR`` says so, and the colours are taken out (:data:`_PYTHON_COLOURS`).

The record then says what such a record says when the plugin logs an exception: its message is
the header, or else the exception's first line (``ValueError: boom``, what an error tracker
titles it by); its ``exc_info`` holds the rest.

Nothing is lost by reading: what the reading declines stays text, whole: a block cut in parts,
a ``SyntaxError`` (its display is not a frame), a group past the 15 members or 10 levels Python
draws (``and 5 more exceptions``), a traceback whose text does not follow Python's format, one
whose frames or exceptions exceed what a record carries. And since a rebuilt frame prints its
source line from the file, never from the text (a plugin must not be able to forge the lines
of a file), :func:`read_back` keeps as text a traceback whose source lines are not what the
files say now (a file this process cannot read, one changed since). At most
:data:`READ_BACK_RATE` a second are read back per process (:func:`read_back_budget`).

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
import time
import traceback
import types
from collections.abc import Callable

from isoplug.logs.exceptions import MAX_MESSAGE_CHARS, ExcInfo
from isoplug.logs.ratelimit import TokenBucket
from isoplug.logs.traceback_text import Printed, read_printed
from isoplug.logs.tracebacks import ExceptionRebuilder
from isoplug.wire import ExceptionData

__all__ = [
    "READ_BACK_BURST",
    "READ_BACK_RATE",
    "PrintedTraceback",
    "parse_printed_traceback",
    "read_back",
    "read_back_budget",
    "shows_the_printed_source",
]

#: Text longer than this is not read back (a record's message is capped below it anyway).
MAX_PARSED_CHARS = 4 * MAX_MESSAGE_CHARS

#: Printed tracebacks read back per second, at most, per process that reads them (a runner,
#: for its records; the host, per runner, for fd-level output), after a burst of this many: a
#: read-back costs about what the print_exc() that printed it did, and a program printing
#: tracebacks in a loop must not double its cost (nor take the host's CPU). Past it, they
#: stay text, whole.
READ_BACK_RATE = 100.0
READ_BACK_BURST = 100.0


#: What Python 3.13+ writes around the parts of a traceback it colours (``_colorize``: SGR
#: sequences, colours and bold only), even on a pipe when ``PYTHON_COLORS`` or ``FORCE_COLOR``
#: says so. Taken out before reading: the record is then the plain traceback. Only these: any
#: other escape stays in the text, which then reads back as nothing Python printed, or whose
#: texts the receiver escapes in the rebuilt exception.
_PYTHON_COLOURS = re.compile(r"\x1b\[[0-9]{1,3}(?:;[0-9]{1,3}){0,3}m")


def read_back_budget(clock: Callable[[], float] = time.monotonic) -> TokenBucket:
    """The bucket of one process's read-backs: :data:`READ_BACK_RATE` a second. Not locked:
    threads racing for the last token may take one too many, which bounds nothing less."""
    return TokenBucket(READ_BACK_RATE, READ_BACK_BURST, clock)


@dataclasses.dataclass(frozen=True, slots=True)
class PrintedTraceback:
    """What a printed traceback says: the record's message and its exception."""

    message: str
    exception: ExceptionData


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
    (see :mod:`isoplug.logs.traceback_text`): the caller then keeps it as text."""
    if len(text) > MAX_PARSED_CHARS:
        return None
    if "\x1b[" in text:
        text = _PYTHON_COLOURS.sub("", text)
    read = read_printed(text)
    if read is None:
        return None
    header, chain = read
    exception = _chain_data(chain)
    last = chain[-1]
    first_line = (last.type_text + ": " + last.text if last.text else last.type_text).split("\n")[0]
    message = header if header is not None else first_line
    return PrintedTraceback(message, exception)


def _chain_data(chain: list[Printed]) -> ExceptionData:
    """The last exception of ``chain``, each linked to the one printed before it."""
    exception: ExceptionData | None = None
    link = ""
    for each in chain:
        exception = _exception_data(each, exception, link)
        link = each.link
    assert exception is not None
    return exception


def _exception_data(printed: Printed, before: ExceptionData | None, link: str) -> ExceptionData:
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
