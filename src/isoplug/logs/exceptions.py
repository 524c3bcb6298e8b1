"""Exceptions leaving a process: a live exception, with its chain, notes and group members,
becomes :class:`~isoplug.wire.ExceptionData` on a log record, bounded.

What is sent is what the :mod:`traceback` module would print in the sender: the exceptions
linked as ``traceback.TracebackException`` links them (a cause, else a context not suppressed,
each exception once), each one's type, module and ``str()`` (or what the traceback module prints
when ``str()`` fails), its notes, and per frame the file, function, source line and the
(lineno, end_lineno, colno, end_colno) that ``code.co_positions()`` gives for ``tb_lasti`` (the
carets Python 3.11+ prints). The receiver turns it back into a genuine ``exc_info``
(:mod:`isoplug.logs.tracebacks`).

The bounds below are the wire's. The sender keeps them, cutting what exceeds them (the middle
frames of a deep recursion, members of a group past :data:`MAX_MEMBERS`, chains deeper than
:data:`MAX_DEPTH`, texts past their character caps); the receiver applies them again, as it
cannot trust the sender to. The conversion never raises, whatever an exception's ``__str__`` or
attributes do.

Cost: only records with an exception are converted.
"""

from __future__ import annotations

import collections.abc
import itertools
import linecache
import sys
import types
from typing import Any, TypeAlias

from isoplug.wire import ExceptionData, FrameData
from isoplug.wire.sanitize import IN_EMITTING_PROCESS, cut_mark

__all__ = [
    "MAX_DEPTH",
    "MAX_EXCEPTIONS",
    "MAX_FILENAME_CHARS",
    "MAX_FRAMES",
    "MAX_MEMBERS",
    "MAX_MESSAGE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_NOTES",
    "MAX_NOTE_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TOTAL_FRAMES",
    "ExcInfo",
    "exception_data",
    "resolve_exc_info",
]

#: An ``exc_info`` tuple whose type and value are known (``sys.exc_info()`` inside ``except``).
ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, types.TracebackType | None]

# -- bounds (both sides apply them: the receiver cannot trust the sender to) -------------------

#: Frames per exception; a longer traceback keeps its outermost and innermost halves.
MAX_FRAMES = 100
#: Frames of all the exceptions of one record together.
MAX_TOTAL_FRAMES = 1000
#: Links from the top exception down (causes, contexts, group members); deeper ones are cut.
MAX_DEPTH = 20
#: Members of one exception group (Python prints 15 and counts the rest).
MAX_MEMBERS = 50
#: Exceptions in one record, the chained ones and group members included.
MAX_EXCEPTIONS = 200
#: Notes of one exception.
MAX_NOTES = 100
#: Characters of one message (the sender's cap; the receiver applies its ReplayLimits).
MAX_MESSAGE_CHARS = 32 * 1024
#: Characters of one note.
MAX_NOTE_CHARS = 8 * 1024
#: Characters of all messages and notes of one record together.
MAX_TEXT_CHARS = 256 * 1024
#: Characters of a frame's file name, and of a function, type or module name.
MAX_FILENAME_CHARS = 4096
MAX_NAME_CHARS = 256
#: Characters of a frame's source line.
_MAX_LINE_CHARS = 512

# -- a live exception -> ExceptionData ----------------------------------------------------------


def resolve_exc_info(value: Any) -> ExcInfo | None:
    """An ``exc_info`` from what structlog allows in an event's ``exc_info``: True (the exception
    being handled now), an exception, or an ``exc_info`` tuple; None if there is none. Never
    raises."""
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        if len(value) == 3 and isinstance(value[1], BaseException):
            tb = value[2] if isinstance(value[2], types.TracebackType) else None
            return (type(value[1]), value[1], tb or value[1].__traceback__)
        return None
    try:
        wanted = bool(value)
    except Exception:  # an object whose truth is undecidable (a numpy array): not an exception
        return None
    current = sys.exc_info()
    if wanted and current[1] is not None:
        return (type(current[1]), current[1], current[2])
    return None


def exception_data(
    error: BaseException,
    tb: types.TracebackType | bool | None = True,
    *,
    plain: bool = False,
) -> ExceptionData | None:
    """``error`` (with its chain, notes and group members) as :class:`ExceptionData`, bounded.

    ``tb`` is the traceback of ``error`` itself (that of an ``exc_info`` tuple, which is what
    the traceback module prints); True means ``error.__traceback__``. Never raises, whatever
    the exception's ``__str__`` or attributes do; None if even the conversion fails. ``plain``
    makes every text valid UTF-8 (lone surrogates escaped).
    """
    try:
        if isinstance(tb, bool):
            tb = error.__traceback__
        return _Converter(plain).convert(error, tb)
    except Exception:
        return None


def _safe_string(value: Any, what: str) -> str:
    """``str(value)``, or what the traceback module prints when that fails."""
    try:
        return str(value)
    except Exception:
        return f"<{what} str() failed>"


def _plain(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cap(texts: str, limit: int) -> str:
    if len(texts) <= limit:
        return texts
    return texts[:limit] + cut_mark(len(texts) - limit, where=IN_EMITTING_PROCESS)


class _Node:
    """One exception being converted, and the exceptions it links to."""

    __slots__ = ("cause", "context", "depth", "error", "members", "tb")

    def __init__(
        self, error: BaseException, depth: int, tb: types.TracebackType | None = None
    ) -> None:
        self.error = error
        self.depth = depth
        self.tb = tb if depth == 0 else error.__traceback__
        self.cause: _Node | None = None
        self.context: _Node | None = None
        self.members: list[_Node] = []


class _Converter:
    def __init__(self, plain: bool) -> None:
        self.plain = plain
        self.frames_left = MAX_TOTAL_FRAMES
        self.text_left = MAX_TEXT_CHARS

    def convert(self, error: BaseException, tb: types.TracebackType | None) -> ExceptionData:
        # Which exceptions are linked where, decided as traceback.TracebackException decides it
        # (its _seen set, in its order), so that the same exceptions print, once each.
        root = _Node(error, 0, tb)
        seen = {id(error)}
        count = 1
        stack = [root]
        while stack:
            node = stack.pop()
            if node.depth >= MAX_DEPTH:
                continue
            error = node.error
            cause = getattr(error, "__cause__", None)
            if (
                isinstance(cause, BaseException)
                and id(cause) not in seen
                and count < MAX_EXCEPTIONS
            ):
                seen.add(id(cause))
                count += 1
                node.cause = _Node(cause, node.depth + 1)
            context = getattr(error, "__context__", None)
            if (
                node.cause is None
                and not getattr(error, "__suppress_context__", False)
                and isinstance(context, BaseException)
                and id(context) not in seen
                and count < MAX_EXCEPTIONS
            ):
                seen.add(id(context))
                count += 1
                node.context = _Node(context, node.depth + 1)
            if isinstance(error, BaseExceptionGroup):
                for member in itertools.islice(error.exceptions, MAX_MEMBERS):
                    if count >= MAX_EXCEPTIONS:
                        break
                    if isinstance(member, BaseException):
                        seen.add(id(member))
                        count += 1
                        node.members.append(_Node(member, node.depth + 1))
            if node.cause is not None:
                stack.append(node.cause)
            if node.context is not None:
                stack.append(node.context)
            stack.extend(node.members)
        return self._data(root)

    def _data(self, node: _Node) -> ExceptionData:
        error = node.error
        kind = type(error)
        module = getattr(kind, "__module__", None)
        module = module if isinstance(module, str) else "<unknown>"
        qualname = getattr(kind, "__qualname__", None)
        qualname = qualname if isinstance(qualname, str) else kind.__name__
        message = self._text(_safe_string(error, "exception"), MAX_MESSAGE_CHARS)
        frames = self._frames(node.tb)
        notes = [self._text(note, MAX_NOTE_CHARS) for note in self._notes(error)]
        return ExceptionData(
            type_name=self._name(qualname, MAX_NAME_CHARS),
            module=self._name(module, MAX_NAME_CHARS),
            message=message,
            frames=frames,
            notes=notes,
            cause=self._data(node.cause) if node.cause is not None else None,
            context=self._data(node.context) if node.context is not None else None,
            suppress_context=bool(getattr(error, "__suppress_context__", False)),
            members=[self._data(member) for member in node.members],
        )

    @staticmethod
    def _notes(error: BaseException) -> list[str]:
        """The notes as the traceback module prints them (each one str()'d)."""
        try:
            notes = getattr(error, "__notes__", None)
        except Exception:
            return []
        if notes is None:
            return []
        if isinstance(notes, collections.abc.Sequence):
            return [_safe_string(note, "note") for note in itertools.islice(notes, MAX_NOTES)]
        try:
            return [repr(notes)]
        except Exception:
            return ["<__notes__ repr() failed>"]

    def _text(self, text: str, limit: int) -> str:
        text = _cap(text, max(0, min(limit, self.text_left)))
        self.text_left -= len(text)
        return _plain(text) if self.plain else text

    def _name(self, text: str, limit: int) -> str:
        text = text if len(text) <= limit else text[:limit]
        return _plain(text) if self.plain else text

    def _frames(self, tb: types.TracebackType | None) -> list[FrameData]:
        entries: list[types.TracebackType] = []
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        allowed = min(MAX_FRAMES, self.frames_left)
        if len(entries) > allowed:
            outer = allowed // 2
            entries = entries[:outer] + entries[len(entries) - (allowed - outer) :]
        self.frames_left -= len(entries)
        return [self._frame(entry) for entry in entries]

    def _frame(self, tb: types.TracebackType) -> FrameData:
        code = tb.tb_frame.f_code
        lasti = tb.tb_lasti
        positions: tuple[int | None, int | None, int | None, int | None] = (None,) * 4
        if lasti >= 0:
            found = next(itertools.islice(code.co_positions(), lasti // 2, None), None)
            if found is not None:
                positions = found
        lineno = positions[0] if positions[0] is not None else tb.tb_lineno
        filename = self._name(code.co_filename, MAX_FILENAME_CHARS)
        line = ""
        if lineno is not None and lineno > 0:
            line = linecache.getline(code.co_filename, lineno).strip()[:_MAX_LINE_CHARS]
            if self.plain:
                line = _plain(line)
        return FrameData(
            filename=filename,
            lineno=lineno,
            name=self._name(code.co_name, MAX_NAME_CHARS),
            line=line,
            end_lineno=positions[1],
            colno=positions[2],
            end_colno=positions[3],
        )
