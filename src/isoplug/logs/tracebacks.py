"""Exceptions arriving in a process: the receiver turns a sender's
:class:`~isoplug.wire.ExceptionData` (made by :mod:`isoplug.logs.exceptions`) back into a genuine
``exc_info``, which every consumer of the replayed record reads.

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
  :data:`MAX_CLASSES` of them. An instance pickles (a host's ``QueueHandler`` to another
  process, an error reporter in a process pool) as a call that makes an equivalent stand-in
  again, as in-process exceptions pickle: message, notes and members, no traceback;
- **a real traceback** (``types.TracebackType``) over real frame objects, the technique of
  jinja2's ``debug.fake_traceback`` and tblib: one tiny code object per frame, its
  ``co_filename`` the sender's file and its ``co_name``/``co_qualname`` the sender's function,
  executed once so that a frame object exists. A frame has no locals (the sender's are not
  sent) and its globals hold no name but ``__builtins__``, whose dict keeps what the code needs
  (``sys._getframe``) and the source guard: tools that show a frame's locals (rich's
  ``show_locals``, ``capture_locals``, error trackers) show none, and none of isoplug's. Its
  ``__name__`` is absent: the sender's module names are not sent. Python 3.11+ prints carets
  under the part of a line that ``code.co_positions()`` gives for ``tb_lasti``; the code
  object's location table (``co_linetable``, whose format is the same from 3.11 to 3.14) is
  written so that *every* instruction has exactly the sender's (lineno, end_lineno, colno,
  end_colno), so the carets, column-less frames (``-X no_debug_ranges``) and frames without a
  line number print as the sender printed them. Code objects are cached, at most
  :data:`MAX_CODES` of them;
- chains (``__cause__``, ``__context__``, ``__suppress_context__``), ``add_note`` notes and the
  members of exception groups.

The traceback module prints source lines from the receiver's disk through :mod:`linecache`, by
the sender's file names: which files it may read is guarded (:mod:`isoplug.logs.sourcelines`).

``logging.Formatter().formatException(exc_info)`` then prints the sender's traceback as Python
printed it in the sender (the carets by the receiver's Python's rules: a 3.13+ receiver draws a
caret line under a whole-line call, ``f()`` / ``~^^``, that 3.11 and 3.12 leave out, and the
sender's Python version is not sent), with three deliberate differences: control characters are
escaped, every line of a message or note but the first of a message is indented by two spaces (a
note's first line too: Python prints it at column 0, and no text the plugin controls may start a
line at column 0, where every record of every usual format starts), and exception type and
module names keep only identifier characters. Other known differences (all rare): a
``SyntaxError`` prints as ``SyntaxError: <str(exc)>`` without its source line and caret; a
context that a cause suppresses (``raise X from e``) is not sent, so ``__context__`` is None
there (nothing prints it); the bounds of :mod:`isoplug.logs.exceptions`, applied here again, cut
what exceeds them (the middle frames of a deep recursion, members of a group past
:data:`~isoplug.logs.exceptions.MAX_MEMBERS`, chains deeper than
:data:`~isoplug.logs.exceptions.MAX_DEPTH`).

Cost: a dictionary look-up per class and per code object (both cached), a ~1 us ``exec`` per
frame, and one file read per new source file.
"""

from __future__ import annotations

import builtins
import re
import sys
import threading
import types
from collections.abc import Generator
from typing import Any, TypeAlias

from isoplug.logs.exceptions import (
    MAX_DEPTH,
    MAX_EXCEPTIONS,
    MAX_FILENAME_CHARS,
    MAX_FRAMES,
    MAX_MEMBERS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_NOTE_CHARS,
    MAX_NOTES,
    MAX_TEXT_CHARS,
    MAX_TOTAL_FRAMES,
    ExcInfo,
)
from isoplug.logs.sourcelines import EntryGuard, SourceGuard
from isoplug.wire import ExceptionData, FrameData
from isoplug.wire.sanitize import clean_text, shows_as_is

__all__ = ["MAX_CLASSES", "MAX_CODES", "ExceptionRebuilder", "rebuilt_exception"]

#: Cached synthetic exception classes and code objects (process-wide).
MAX_CLASSES = 1024
MAX_CODES = 4096

#: Line numbers, columns and multi-line spans are clamped to these (absurd values from a sender
#: must neither overflow a code object's fields nor make the traceback module read a billion
#: lines of a file).
_MAX_LINENO = 1_000_000_000
_MAX_COLUMN = 1_000_000
_MAX_SPAN_LINES = 1000

# -- exception classes ---------------------------------------------------------------------------


def _sent_str(self: BaseException) -> str:
    """``__str__`` of the synthetic classes: the sender's ``str(exc)``, exactly."""
    message = self.__dict__.get("_isoplug_message", "")
    return message if isinstance(message, str) else ""


def _reduce_stand_in(self: BaseException) -> tuple[Any, ...]:
    """``__reduce__`` of the synthetic classes. pickle finds a class by its module and name,
    which are the sender's (``builtins.ValueError`` is the real class, not this stand-in; a
    plugin's module is not importable here), so it could not pickle an instance. Like
    ``BaseException``'s own, this keeps the message, notes and a group's members but neither
    traceback nor chain: unpickled (another process of the host's), it is an equivalent
    stand-in, made again from the class's module and name."""
    cls = type(self)
    members = list(self.exceptions) if isinstance(self, BaseExceptionGroup) else []
    return (
        rebuilt_exception,
        (cls.__module__, cls.__qualname__, _sent_str(self), members),
        dict(self.__dict__),
    )


_classes: dict[tuple[str, str, type[BaseException]], type[BaseException]] = {}
_classes_lock = threading.Lock()
_NAME_COMPONENT = re.compile(r"[^\w]")
_GROUP_SUFFIX = re.compile(r" \(\d+ sub-exceptions?\)\Z")


def _clean_dotted(name: str) -> str:
    """A module or qualified name of identifier components only (``<locals>`` allowed): no
    spaces, no punctuation, nothing starting with a digit, so it cannot pose as a record."""
    if not name:
        return ""
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS]
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
    namespace = {
        "__module__": module,
        "__qualname__": qualname,
        "__str__": _sent_str,
        "__reduce__": _reduce_stand_in,
    }
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


# -- code objects and frames --------------------------------------------------------------------

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


#: Run once per frame: ``_f`` is the frame itself. ``_g`` comes from the builtins it is given,
#: which hold nothing else but the source guard.
_TEMPLATE = compile("_f = _g()", "<isoplug>", "exec")
_UNITS = len(_TEMPLATE.co_code) // 2
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

#: Whether this Python's ``ast.parse`` must not run in two threads at once. Before 3.11.8 and
#: 3.12.2, the ast module keeps one recursion count for all threads (CPython gh-106905): a
#: thread whose parse is paused (a finalizer run by the garbage collector lets another thread
#: in) finds the count another thread's parse left, and raises ``SystemError: AST constructor
#: recursion depth mismatch``. Python 3.11+ prints carets under a traceback's line by parsing
#: it, so every rebuilt traceback a host handler formats in a log thread would be such a
#: parse, and the host application's own ``ast.parse`` (templates, assertion rewriting, a
#: linter) would fail at random while plugins log exceptions: measured here on 3.11.7, 77 of
#: 90 parses of a large module failed beside a thread formatting tracebacks. There, frames are
#: rebuilt without columns (as under ``-X no_debug_ranges``): no carets, no parse.
AST_PARSE_SHARES_STATE = any(
    first <= sys.version_info[:3] < fixed
    for first, fixed in (((3, 11), (3, 11, 8)), ((3, 12), (3, 12, 2)))
)


class ExceptionRebuilder:
    """Rebuilds the exceptions of one sender (one per :class:`~isoplug.logs.LogReplayer`); the
    source files that sender may have read are its :class:`~isoplug.logs.sourcelines.SourceGuard`'s
    to decide."""

    def __init__(
        self, *, max_message_chars: int = MAX_MESSAGE_CHARS, max_text_chars: int = MAX_TEXT_CHARS
    ) -> None:
        self.max_message_chars = max_message_chars
        self.max_text_chars = max_text_chars
        self.sources = SourceGuard()

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


class _Build:
    """The budget and memo of one rebuild."""

    def __init__(self, rebuilder: ExceptionRebuilder) -> None:
        self.rebuilder = rebuilder
        self.exceptions = 0
        self.frames_left = MAX_TOTAL_FRAMES
        self.text_left = rebuilder.max_text_chars
        self.guards: dict[str, EntryGuard | None] = {}

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
        value = rebuilt_exception(module, qualname, message, members)
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
        if not shows_as_is(filename) or len(filename) > MAX_FILENAME_CHARS:
            filename = clean_text(filename, MAX_FILENAME_CHARS)
        name = data.name
        if not shows_as_is(name) or len(name) > MAX_NAME_CHARS:
            name = clean_text(name, MAX_NAME_CHARS)
        lineno = data.lineno
        column = end_column = None
        end_lineno = 0
        if lineno is not None:
            lineno = min(max(lineno, 0), _MAX_LINENO)
            end_lineno = data.end_lineno if data.end_lineno is not None else lineno
            end_lineno = min(max(end_lineno, lineno), lineno + _MAX_SPAN_LINES)
            if data.colno is not None and data.end_colno is not None and not AST_PARSE_SHARES_STATE:
                column = min(max(data.colno, 0), _MAX_COLUMN)
                end_column = min(max(data.end_colno, 0), _MAX_COLUMN)
        code = _code((filename, name, lineno, end_lineno, column, end_column))
        if filename in self.guards:
            guard = self.guards[filename]
        else:
            guard = self.guards[filename] = self.rebuilder.sources.guard(filename)
        # The frame's globals hold its guard for as long as it lives; under __builtins__,
        # which every module's globals have, so that its globals and locals show none of
        # isoplug's names (tools that show a frame's variables read them).
        namespace: dict[str, Any] = {
            "__builtins__": {"_g": sys._getframe, "__isoplug_guard__": guard}
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
        # Locals of their own, emptied once the frame is taken: the frame shows none.
        local_names: dict[str, Any] = {}
        exec(code, namespace, local_names)  # our own template, which only takes its frame
        box[:] = [local_names.pop("_f")]
        del box, code, namespace, local_names  # hold nothing (no guard) while waiting


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
        local_names: dict[str, Any] = {}
        exec(code, namespace, local_names)
        return local_names.pop("_f")  # type: ignore[no-any-return]
    return box[0]  # type: ignore[no-any-return]


def rebuilt_exception(
    module: str, qualname: str, message: str, members: list[BaseException]
) -> BaseException:
    """A stand-in exception of the sender's class ``module.qualname`` whose ``str()`` is
    ``message`` (a group of ``members`` if any), without traceback; what unpickling makes."""
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
