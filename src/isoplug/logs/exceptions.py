"""Exceptions across the process boundary: a live exception becomes :class:`ExceptionData` in the
sender, and the receiver turns that back into a genuine ``exc_info`` that every consumer reads.

Why a genuine ``exc_info``
--------------------------
Consumers of ``logging`` read a record's exception from ``record.exc_info``, not from its text:
OpenTelemetry's ``LoggingHandler`` writes ``exception.stacktrace`` only when the traceback object
is not None, structlog's ``format_exc_info`` accepts only None or a real ``TracebackType``, and
``logging.Formatter.formatException`` calls :func:`traceback.print_exception`. So the receiver
builds, for every exception it replays:

- **a class** with the sender's ``__module__``, ``__name__`` and ``__qualname__``. A builtin
  (module ``builtins``) subclasses the real builtin, so ``isinstance(value, KeyError)`` holds;
  anything else subclasses ``Exception`` (a group: ``ExceptionGroup`` or
  ``BaseExceptionGroup``). ``__str__`` returns the sender's ``str(exc)`` exactly (sanitized), so
  ``KeyError('k')`` still prints ``'k'``. Classes are cached per (module, qualname, base), at most
  :data:`MAX_CLASSES` of them;
- **a real traceback** (``types.TracebackType``) over real frame objects, the technique of
  jinja2's ``debug.fake_traceback`` and tblib: one tiny code object per frame, its
  ``co_filename`` the sender's file and its ``co_name``/``co_qualname`` the sender's function,
  executed once so that a frame object exists. Python 3.11+ prints carets under the part of a
  line that ``code.co_positions()`` gives for ``tb_lasti``; the code object's location table
  (``co_linetable``, whose format is the same from 3.11 to 3.14) is written so that *every*
  instruction has exactly the sender's (lineno, end_lineno, colno, end_colno), so the carets,
  column-less frames (``-X no_debug_ranges``) and frames without a line number print as the
  sender printed them. Code objects are cached, at most :data:`MAX_CODES` of them;
- chains (``__cause__``, ``__context__``, ``__suppress_context__``), ``add_note`` notes and the
  members of exception groups.

``logging.Formatter().formatException(exc_info)`` then prints the sender's traceback as Python
printed it in the sender, with three deliberate differences: control characters are escaped,
every line of a message or note but the first of a message is indented by two spaces (a note's
first line too: Python prints it at column 0, and no text the plugin controls may start a line
at column 0, where every record of every usual format starts), and exception type and module
names keep only identifier characters. Other known differences (all rare): a ``SyntaxError``
prints as ``SyntaxError: <str(exc)>`` without its source line and caret; a context that a cause
suppresses (``raise X from e``) is not sent, so ``__context__`` is None there (nothing prints it);
bounds below cut what exceeds them (the middle frames of a deep recursion, members of a group
past :data:`MAX_MEMBERS`, chains deeper than :data:`MAX_DEPTH`).

Source lines, and why they are guarded
--------------------------------------
The traceback module reads source lines through :mod:`linecache`, from the receiver's disk, by
the frame's file name. Same machine, same files: that is what gives the fidelity. But the file
name comes from the untrusted sender, and a host formatting a record must never hang or run out
of memory because of it. Before an ``exc_info`` is handed out, each frame's file that is not in
``linecache.cache`` yet gets an entry there, made here:

- a *regular* file of at most :data:`MAX_SOURCE_BYTES` whose name ends in one of
  :data:`SOURCE_SUFFIXES` is read (opened non-blocking, checked again on the open descriptor,
  never more than its size, never on ``/proc`` or ``/sys``), its control characters escaped and
  its lines capped at :data:`MAX_SOURCE_LINE_CHARS`;
- anything else (``/dev/zero``, a FIFO, a socket, a huge file, a relative name that linecache
  would look up on ``sys.path``, a file that does not exist yet, a private key a plugin would
  like to see printed in the host's logs, a file past the per-sender budget of
  :data:`MAX_LOADED_FILES` / :data:`MAX_LOADED_BYTES`) gets an *empty* entry
  ``(0, None, [], filename)``, so linecache never opens it.

Entries are made with ``mtime`` None, which ``linecache.checkcache`` leaves alone, so a plugin
cannot swap a FIFO in after the check. The sender's own text is never put into linecache (that
would let it forge the lines of the host's own files). Entries already in linecache (the host's
own files) are left as they are. Each entry lives as long as some frame that names its file
(every such frame holds a guard object in its globals; when the last one goes, the entry goes),
so a sender inventing file names cannot grow linecache without bound.

Residual risks: a regular file on a file system that blocks reads (a FUSE mount) can still stall
the thread that reads it; a ``.py`` file of the host's that holds secrets can have lines printed
(one per frame the plugin invents); an entry the host already had with a real ``mtime`` is
re-read by linecache if that file changes; ``linecache.clearcache()`` drops the guards of records
not yet formatted (the next rebuild puts them back).

Cost: the sender converts only records with an exception. The receiver's rebuild is a dictionary
look-up per class and per code object (both cached), a ~1 us ``exec`` per frame, and one file
read per new source file.
"""

from __future__ import annotations

import builtins
import collections.abc
import contextlib
import functools
import io
import itertools
import linecache
import os
import re
import stat
import sys
import threading
import tokenize
import types
import weakref
from collections.abc import Generator
from typing import Any, TypeAlias

from isoplug.logs.sanitize import clean_text
from isoplug.wire import ExceptionData, FrameData

__all__ = [
    "MAX_CLASSES",
    "MAX_CODES",
    "MAX_DEPTH",
    "MAX_EXCEPTIONS",
    "MAX_FRAMES",
    "MAX_LOADED_BYTES",
    "MAX_LOADED_FILES",
    "MAX_MEMBERS",
    "MAX_SOURCE_BYTES",
    "MAX_SOURCE_LINE_CHARS",
    "MAX_TOTAL_FRAMES",
    "SOURCE_SUFFIXES",
    "ExcInfo",
    "ExceptionRebuilder",
    "exception_data",
    "resolve_exc_info",
]

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
_MAX_FILENAME_CHARS = 4096
_MAX_NAME_CHARS = 256
_MAX_LINE_CHARS = 512

#: Source files larger than this are never read for traceback lines.
MAX_SOURCE_BYTES = 8 * 1024 * 1024
#: Longer source lines are cut (so that one record cannot print megabytes of one line).
MAX_SOURCE_LINE_CHARS = 4096
#: Only files with these suffixes are read for source lines: Python and Cython sources. Other
#: files a sender names (keys, ``.env`` files, anything else the host may read) never are.
SOURCE_SUFFIXES = (".py", ".pyw", ".pyx", ".pxd", ".pxi")
#: Source files one sender (one :class:`ExceptionRebuilder`) may cause to be read, and their
#: total size; past either, frames of new files print without source lines.
MAX_LOADED_FILES = 256
MAX_LOADED_BYTES = 64 * 1024 * 1024
#: Cached synthetic exception classes and code objects (process-wide).
MAX_CLASSES = 1024
MAX_CODES = 4096

#: Line numbers, columns and multi-line spans are clamped to these (absurd values from a sender
#: must neither overflow a code object's fields nor make the traceback module read a billion
#: lines of a file).
_MAX_LINENO = 1_000_000_000
_MAX_COLUMN = 1_000_000
_MAX_SPAN_LINES = 1000

# -- the sender: a live exception -> ExceptionData ------------------------------------------


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
    return f"{texts[:limit]}... [truncated {len(texts) - limit} characters in the emitting process]"


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
            type_name=self._name(qualname, _MAX_NAME_CHARS),
            module=self._name(module, _MAX_NAME_CHARS),
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
        filename = self._name(code.co_filename, _MAX_FILENAME_CHARS)
        line = ""
        if lineno is not None and lineno > 0:
            line = linecache.getline(code.co_filename, lineno).strip()[:_MAX_LINE_CHARS]
            if self.plain:
                line = _plain(line)
        return FrameData(
            filename=filename,
            lineno=lineno,
            name=self._name(code.co_name, _MAX_NAME_CHARS),
            line=line,
            end_lineno=positions[1],
            colno=positions[2],
            end_colno=positions[3],
        )


# -- the receiver: ExceptionData -> a genuine exc_info ------------------------------------------


def _sent_str(self: BaseException) -> str:
    """``__str__`` of the synthetic classes: the sender's ``str(exc)``, exactly."""
    message = self.__dict__.get("_isoplug_message", "")
    return message if isinstance(message, str) else ""


_classes: dict[tuple[str, str, type[BaseException]], type[BaseException]] = {}
_classes_lock = threading.Lock()
_NAME_COMPONENT = re.compile(r"[^\w]")
_GROUP_SUFFIX = re.compile(r" \(\d+ sub-exceptions?\)\Z")


def _clean_dotted(name: str) -> str:
    """A module or qualified name of identifier components only (``<locals>`` allowed): no
    spaces, no punctuation, nothing starting with a digit, so it cannot pose as a record."""
    if not name:
        return ""
    if len(name) > _MAX_NAME_CHARS:
        name = name[:_MAX_NAME_CHARS]
    parts = []
    for part in name.split("."):
        if part.isidentifier() or (
            part[:1] == "<" and part[-1:] == ">" and part[1:-1].isidentifier()
        ):
            parts.append(part)
            continue
        cleaned = _NAME_COMPONENT.sub("_", part)
        parts.append(cleaned if cleaned[:1].isidentifier() else f"_{cleaned}")
    return ".".join(parts)


def _exception_class(module: str, qualname: str, base: type[BaseException]) -> type[BaseException]:
    key = (module, qualname, base)
    found = _classes.get(key)
    if found is not None:
        return found
    namespace = {"__module__": module, "__qualname__": qualname, "__str__": _sent_str}
    made: type[BaseException] = type(qualname.rpartition(".")[2], (base,), namespace)
    with _classes_lock:
        while len(_classes) >= MAX_CLASSES:
            del _classes[next(iter(_classes))]
        return _classes.setdefault(key, made)


def _builtin_exception(module: str, qualname: str) -> type[BaseException] | None:
    if module != "builtins":
        return None
    found = getattr(builtins, qualname, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


# The location table of the code objects made for frames. Each entry covers up to 8 code units;
# see CPython's InternalDocs/code_objects.md ("Format of the locations table").


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 64:
        out.append(0x40 | (value & 63))
        value >>= 6
    out.append(value)
    return bytes(out)


def _location_table(
    units: int, end_delta: int | None, column: int | None, end_column: int | None
) -> bytes:
    """Every one of ``units`` code units at the code's first line (``end_delta`` None: no
    location at all), from ``column`` to ``end_column`` (None: no column information)."""
    out = bytearray()
    while units:
        length = min(units, 8)
        units -= length
        if end_delta is None:
            out.append(0x80 | (15 << 3) | (length - 1))
        elif column is None or end_column is None:
            out.append(0x80 | (13 << 3) | (length - 1))
            out += _varint(0)  # line delta 0, as a signed varint
        else:
            out.append(0x80 | (14 << 3) | (length - 1))
            out += _varint(0) + _varint(end_delta) + _varint(column + 1) + _varint(end_column + 1)
    return bytes(out)


#: Run once per frame: ``_f`` is the frame itself. No builtins, nothing else.
_TEMPLATE = compile("_f = _g()", "<isoplug>", "exec")
_UNITS = len(_TEMPLATE.co_code) // 2
_NO_BUILTINS: dict[str, Any] = {}
#: (filename, name, lineno, end_lineno, column, end_column) of a frame.
_CodeKey: TypeAlias = tuple[str, str, int | None, int, int | None, int | None]
_codes: dict[_CodeKey, types.CodeType] = {}
_codes_lock = threading.Lock()


def _code(key: _CodeKey) -> types.CodeType:
    """The code object whose every instruction is at the frame ``key`` describes."""
    found = _codes.get(key)
    if found is not None:
        return found
    filename, name, lineno, end_lineno, column, end_column = key
    table = _location_table(
        _UNITS, None if lineno is None else end_lineno - lineno, column, end_column
    )
    made = _TEMPLATE.replace(
        co_filename=filename,
        co_name=name,
        co_qualname=name,
        co_firstlineno=1 if lineno is None else lineno,
        co_linetable=table,
    )
    with _codes_lock:
        while len(_codes) >= MAX_CODES:
            del _codes[next(iter(_codes))]
        _codes[key] = made
    return made


def _positions_are_exact() -> bool:
    """Whether this Python reads the location table as written here (3.11 to 3.14 do)."""
    try:
        code = _code(("<isoplug check>", "check", 7, 9, 3, 11))
        return set(code.co_positions()) == {(7, 9, 3, 11)}
    except Exception:
        return False


_EXACT_POSITIONS = _positions_are_exact()


# Guarded linecache entries (see the module docstring): process-wide, like linecache itself.


class _Guard:
    """Held (in its globals) by every rebuilt frame of one file; its entry goes with it."""

    __slots__ = ("__weakref__", "filename")

    def __init__(self, filename: str) -> None:
        self.filename = filename


_guards_lock = threading.RLock()
_live_guards: weakref.WeakValueDictionary[str, _Guard] = weakref.WeakValueDictionary()
#: The linecache entries made here, by file name, while some guard of theirs lives.
_entries: dict[str, tuple[int, float | None, list[str], str]] = {}


def _release(filename: str) -> None:
    """The last guard of ``filename`` is gone: take its entry out of linecache."""
    with _guards_lock:
        if _live_guards.get(filename) is not None:
            return  # adopted by a newer guard
        entry = _entries.pop(filename, None)
        if entry is not None and linecache.cache.get(filename) is entry:
            del linecache.cache[filename]


def _new_guard(filename: str) -> _Guard:
    guard = _Guard(filename)
    _live_guards[filename] = guard
    weakref.finalize(guard, _release, filename).atexit = False
    return guard


@functools.cache
def _pseudo_file_systems() -> frozenset[int]:
    """Device numbers of /proc and /sys, whose "regular" files are views of live processes."""
    devices = set()
    for path in ("/proc", "/sys"):
        with contextlib.suppress(OSError):
            devices.add(os.stat(path).st_dev)
    return frozenset(devices)


def _readable(status: os.stat_result) -> bool:
    return (
        stat.S_ISREG(status.st_mode)
        and status.st_size <= MAX_SOURCE_BYTES
        and status.st_dev not in _pseudo_file_systems()
    )


def _read_source(filename: str) -> tuple[int, list[str]] | None:
    """The lines of a source file as linecache would read them, escaped and capped; None if
    the file must not be read (see the module docstring)."""
    if not os.path.isabs(filename) or not filename.endswith(SOURCE_SUFFIXES):
        return None
    try:
        if not _readable(os.stat(filename)):
            return None
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        descriptor = os.open(filename, flags)
        try:
            status = os.fstat(descriptor)  # the file opened, not the name checked before
            if not _readable(status):
                return None
            chunks = []
            left = status.st_size
            while left > 0:
                chunk = os.read(descriptor, min(left, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(descriptor)
        data = b"".join(chunks)
        # As tokenize.open() decodes (the coding cookie, universal newlines), like linecache.
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        lines = io.TextIOWrapper(io.BytesIO(data), encoding, line_buffering=True).readlines()
    except (OSError, ValueError, SyntaxError, LookupError):
        return None
    cleaned = []
    for line in lines:
        text = line[:-1] if line.endswith("\n") else line
        if not text.isprintable() or len(text) > MAX_SOURCE_LINE_CHARS:
            text = clean_text(text, MAX_SOURCE_LINE_CHARS)
        cleaned.append(text + "\n")
    return len(data), cleaned


class ExceptionRebuilder:
    """Rebuilds the exceptions of one sender (one per :class:`~isoplug.logs.LogReplayer`); it
    counts the source files that sender had read, against :data:`MAX_LOADED_FILES` and
    :data:`MAX_LOADED_BYTES`."""

    def __init__(
        self, *, max_message_chars: int = MAX_MESSAGE_CHARS, max_text_chars: int = MAX_TEXT_CHARS
    ) -> None:
        self.max_message_chars = max_message_chars
        self.max_text_chars = max_text_chars
        self._loaded: set[str] = set()
        self._loaded_bytes = 0

    def rebuild(self, data: ExceptionData) -> ExcInfo:
        """A genuine ``exc_info`` for ``data``; raises only if even a bounded rebuild fails
        (the caller then falls back to the text and says so)."""
        if not _EXACT_POSITIONS:
            raise RuntimeError(
                "this Python's code location table is not the one isoplug writes; "
                "exceptions are replayed as text"
            )
        build = _Build(self)
        value = build.exception(data, 0)
        return (type(value), value, value.__traceback__)

    def _source(self, filename: str) -> tuple[int, list[str]] | None:
        """The source of ``filename`` if this sender may still have it read."""
        known = filename in self._loaded
        if not known and (
            len(self._loaded) >= MAX_LOADED_FILES or self._loaded_bytes >= MAX_LOADED_BYTES
        ):
            return None
        source = _read_source(filename)
        if source is not None and not known:
            self._loaded.add(filename)
            self._loaded_bytes += source[0]
        return source

    def guard(self, filename: str) -> _Guard | None:
        """Make sure linecache will never open ``filename`` by itself (see the module
        docstring); the guard returned keeps the entry made for it alive."""
        if not filename or (filename[0] == "<" and filename[-1] == ">"):
            return None  # linecache never reads these
        with _guards_lock:
            guard = _live_guards.get(filename)
            current = linecache.cache.get(filename)
            if current is not None:
                if current is not _entries.get(filename):
                    return None  # the host's own entry: left alone
                return guard if guard is not None else _new_guard(filename)
        source = self._source(filename)  # file I/O outside the lock
        size, lines = source if source is not None else (0, [])
        entry = (size, None, lines, filename)
        with _guards_lock:
            current = linecache.cache.get(filename)
            guard = _live_guards.get(filename)
            if current is None:
                linecache.cache[filename] = entry
                _entries[filename] = entry
            elif current is not _entries.get(filename):
                return None  # made by someone else meanwhile
            return guard if guard is not None else _new_guard(filename)


class _Build:
    """The budget and memo of one rebuild."""

    def __init__(self, rebuilder: ExceptionRebuilder) -> None:
        self.rebuilder = rebuilder
        self.exceptions = 0
        self.frames_left = MAX_TOTAL_FRAMES
        self.text_left = rebuilder.max_text_chars
        self.guards: dict[str, _Guard | None] = {}

    def text(self, text: str, limit: int) -> str:
        text = clean_text(text, max(0, min(limit, self.text_left)))
        self.text_left -= len(text)
        return text

    def exception(self, data: ExceptionData, depth: int) -> BaseException:
        self.exceptions += 1
        tb = self.traceback(data.frames)
        members = []
        if depth < MAX_DEPTH:
            for member in data.members[:MAX_MEMBERS]:
                if self.exceptions >= MAX_EXCEPTIONS:
                    break
                members.append(self.exception(member, depth + 1))
        module = _clean_dotted(data.module) or "<unknown>"
        qualname = _clean_dotted(data.type_name) or "<unknown>"
        message = self.text(data.message, self.rebuilder.max_message_chars)
        value = _instantiate(module, qualname, message, members)
        if data.notes:
            value.__notes__ = [self.note(note) for note in data.notes[:MAX_NOTES]]
        value.__traceback__ = tb
        if depth < MAX_DEPTH:
            if data.cause is not None and self.exceptions < MAX_EXCEPTIONS:
                value.__cause__ = self.exception(data.cause, depth + 1)
            if data.context is not None and self.exceptions < MAX_EXCEPTIONS:
                value.__context__ = self.exception(data.context, depth + 1)
        value.__suppress_context__ = data.suppress_context  # after __cause__, which sets it
        return value

    def note(self, note: str) -> str:
        text = self.text(note, MAX_NOTE_CHARS)
        return text if text[:1] in (" ", "\t", "") else f"  {text}"

    def traceback(self, frames: list[FrameData]) -> types.TracebackType | None:
        allowed = max(0, min(MAX_FRAMES, self.frames_left))
        if len(frames) > allowed:
            outer = allowed // 2
            frames = frames[:outer] + frames[len(frames) - (allowed - outer) :]
        self.frames_left -= len(frames)
        tb = None
        for frame in reversed(frames):
            tb = self.frame(frame, tb)
        return tb

    def frame(self, data: FrameData, tb_next: types.TracebackType | None) -> types.TracebackType:
        filename = data.filename
        if not filename.isprintable() or len(filename) > _MAX_FILENAME_CHARS:
            filename = clean_text(filename, _MAX_FILENAME_CHARS)
        name = data.name
        if not name.isprintable() or len(name) > _MAX_NAME_CHARS:
            name = clean_text(name, _MAX_NAME_CHARS)
        lineno = data.lineno
        column = end_column = None
        end_lineno = 0
        if lineno is not None:
            lineno = min(max(lineno, 0), _MAX_LINENO)
            end_lineno = data.end_lineno if data.end_lineno is not None else lineno
            end_lineno = min(max(end_lineno, lineno), lineno + _MAX_SPAN_LINES)
            if data.colno is not None and data.end_colno is not None:
                column = min(max(data.colno, 0), _MAX_COLUMN)
                end_column = min(max(data.end_colno, 0), _MAX_COLUMN)
        code = _code((filename, name, lineno, end_lineno, column, end_column))
        if filename in self.guards:
            guard = self.guards[filename]
        else:
            guard = self.guards[filename] = self.rebuilder.guard(filename)
        namespace: dict[str, Any] = {
            "__builtins__": _NO_BUILTINS,
            "_g": sys._getframe,
            "__isoplug_guard__": guard,
        }
        frame = _run(code, namespace)
        # tb_lineno -1: "compute it from tb_lasti", which gives None for no location.
        return types.TracebackType(tb_next, frame, 0, -1 if lineno is None else lineno)


def _frame_maker() -> Generator[None, list[Any], None]:
    """Runs the frame code objects. A frame that outlives its run links ``f_back`` to the frame
    that ran it, which would keep the receiver's whole call stack (the batch being replayed, the
    event loop...) alive with every record; this generator's frame is the one that runs them,
    and while it waits its own ``f_back`` is None."""
    while True:
        box = yield
        code, namespace = box
        exec(code, namespace)  # our own template, which only takes its frame
        box[:] = [namespace.pop("_f")]
        del box, code, namespace  # hold nothing (no guard) while waiting


_makers = threading.local()


def _run(code: types.CodeType, namespace: dict[str, Any]) -> types.FrameType:
    maker = getattr(_makers, "maker", None)
    if maker is None:
        maker = _makers.maker = _frame_maker()
        next(maker)
    box: list[Any] = [code, namespace]
    try:
        maker.send(box)
    except ValueError:  # already running in this thread (a rebuild inside a rebuild)
        exec(code, namespace)
        return namespace.pop("_f")  # type: ignore[no-any-return]
    return box[0]  # type: ignore[no-any-return]


def _instantiate(
    module: str, qualname: str, message: str, members: list[BaseException]
) -> BaseException:
    builtin = _builtin_exception(module, qualname)
    if members:
        if builtin is not None and issubclass(builtin, BaseExceptionGroup):
            base: type[BaseException] = builtin
        else:
            base = ExceptionGroup
        if issubclass(base, Exception) and not all(isinstance(m, Exception) for m in members):
            base = BaseExceptionGroup
        cls = _exception_class(module, qualname, base)
        group_message = _GROUP_SUFFIX.sub("", message)
        value: BaseException = cls(group_message, members)
    else:
        if builtin is not None and not issubclass(builtin, BaseExceptionGroup):
            base = builtin
        else:
            base = Exception
        cls = _exception_class(module, qualname, base)
        value = cls.__new__(cls)
        value.args = (message,)
        if isinstance(value, SyntaxError):
            value.msg = message
    value.__dict__["_isoplug_message"] = message
    return value
