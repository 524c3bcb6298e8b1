"""Structure from text: the lines a program prints become records with a level and extras.

Output that is not a log record (a ``print``, a C library writing to fd 2, a child process)
still says more than its bytes: a JSON object with a level, a ``LEVEL:`` prefix, a traceback.
:class:`LineClassifier` reads one stream's lines and returns :class:`TextRecord` objects:

- **Structured lines and levels** (:mod:`isoplug.logs.line_fields`): a JSON or logfmt line
  with a message is a record at its level, its other fields extras; a level prefix
  (``ERROR: disk full``, ``[warning] slow``, a time then a level, glog's...) sets the level,
  the text kept whole.
- **Warnings.** What :mod:`warnings` prints (``path:12: UserWarning: text``) and the source
  line under it are one record at WARNING, its ``category`` an extra.
- **Blocks.** A Python traceback (``Traceback (most recent call last):`` up to its exception
  line, with the headers Python prints before one: ``Exception in thread ...:``, ``Exception
  ignored in: ...``, and the lines that chain exceptions) is one record at ERROR. So is a
  log line of WARNING or more that its reader read together with the traceback right under
  it (:meth:`LineClassifier.lead`: a ``log.exception()``'s message), at its own level. A
  faulthandler (or ``Py_FatalError``) dump is one record at CRITICAL, all its threads' stacks
  included: ``Fatal Python error: ...`` (on Windows also ``Windows fatal exception: ...``),
  ``Python runtime state: ...`` (and the exception Python may print after it), blank lines,
  stack headers (``Current thread 0x... (most recent call first):``, ``Thread 0x...``,
  ``Stack (most recent call first):``, 3.14's ``Current thread's C stack trace ...``), their
  indented lines (``  File "...", line N in f``, ``  ...``, ``  <no Python frame>``),
  ``<...>`` notes and ``...`` (too many threads). The dump ends with ``Extension modules:
  ... (total: N)``, emitted at once (a Windows exception's dump has none), or at the first
  line that fits none of these, which is classified afresh: a program that prints such a
  first line and lives on (a C library's message, a child that printed it) has only that
  line at CRITICAL, not everything it prints next; nor does a program whose Windows
  exception faulthandler dumped and something then handled (the dump is its only record at
  CRITICAL). A ``faulthandler.dump_traceback_later`` dump (``Timeout (0:00:05)!``, then
  the stacks as above) is one such record too, at ERROR: a watchdog's report, after which
  the process may live on. A block is emitted in parts past
  :data:`MAX_BLOCK_LINES` lines or :data:`MAX_BLOCK_CHARS` characters, so a block that never
  ends cannot grow without bound.

  Dumps are recognized only where one can pass: ``LineClassifier(level,
  fatal_blocks=False)`` treats ``Fatal Python error:`` as an ordinary line. A real dump is
  written by C code straight to fd 2, as the process dies; text written through Python
  (:class:`~isoplug.logs.streams.LogStream`, a plugin's ``print()``) never holds one, so
  there such a line is a quotation, and keeps the stream's level and its neighbours'
  records their own (a plugin printing ``Fatal Python error: ...`` cannot make its next
  lines CRITICAL or hold them back). The host's reader of a runner's fds keeps them on.

A finished traceback may still be followed by a chained one, so the classifier *holds* it
until the next line says otherwise (a line its writer says continues the block stays in it:
the rest of an exception's message, its notes, which text alone cannot tell from what the
program prints next); a reader that sees its stream go quiet while
:attr:`LineClassifier.holding` calls :meth:`LineClassifier.flush`. Where the writer cannot
say so (``message_lines=True``: a process's fd-level output), plain lines right after an
exception line are held with it, up to :data:`MAX_MESSAGE_LINES`: a chain line after them
proves them the rest of that exception's message (``ValueError("inner\nsecond line")``
raised in the middle of a chain), anything else makes them lines of their own.

Nothing here sanitizes: the text is the untrusted sender's, and the receiver cleans every
record's text and extras the same way whichever door it came through.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import re
from typing import Any

from isoplug.logs.line_fields import level_of_prefix, parse_structured

__all__ = [
    "MAX_BLOCK_CHARS",
    "MAX_BLOCK_LINES",
    "NOT_PLAIN_START",
    "NOT_PLAIN_START_WITH_DUMPS",
    "REDRAWN_LEVEL",
    "TRACEBACK_START",
    "LineClassifier",
    "TextRecord",
    "is_plain_line",
    "is_terminal_drawing",
    "leads_a_traceback",
    "redrawn",
]

#: A traceback longer than this many lines (deep recursion prints thousands) is emitted in
#: parts, so that one record stays a sane size.
MAX_BLOCK_LINES = 400
#: ...and one longer than this many characters (a few long lines can be as large).
MAX_BLOCK_CHARS = 64 * 1024
#: Plain lines after an exception line held, at most, as the possible rest of its message
#: (``LineClassifier(message_lines=True)``): a chain line after them says they were.
MAX_MESSAGE_LINES = 16
TRACEBACK_START = "Traceback (most recent call last):"
_GROUP_START = "Exception Group Traceback (most recent call last):"
#: Lines Python prints before a traceback, at column 0, that belong to it.
_BLOCK_HEADERS = (
    "Exception in thread ",
    "Exception ignored in: ",
    "Exception ignored in ",
    "Unhandled exception in thread started by ",
)
#: Lines Python prints between the parts of a chained exception.
_CHAIN_LINES = frozenset(
    {
        "The above exception was the direct cause of the following exception:",
        "During handling of the above exception, another exception occurred:",
    }
)
#: The first line of a crash dump: faulthandler's (a fatal signal; 3.14's own variant for an
#: unknown signal; on Windows, a fatal exception: ``Windows fatal exception: access
#: violation``, ``... code 0xc0000409``, whose stacks follow as a signal's do, never with an
#: ``Extension modules:`` line) or ``Py_FatalError``'s.
_FATAL_STARTS = (
    "Fatal Python error: ",
    "Fatal Python error from unexpected signum: ",
    "Windows fatal exception: ",
)
#: The first line of ``faulthandler.dump_traceback_later``'s dump (its timeout as
#: ``H:MM:SS``, microseconds when it has any), followed by the stacks as a crash dump's are.
_TIMEOUT = re.compile(r"Timeout \(\d+:\d\d:\d\d(?:\.\d{6})?\)!")
#: A warning as :mod:`warnings` prints it (a child process's, or one written past the runner's
#: hooks): ``path:line: Category: message``, then, where the file can be read, its source
#: line, indented by two spaces. The two are one record.
_WARNING_LINE = re.compile(r"\S[^:]*:\d+: (?P<category>[A-Za-z_][\w.]*Warning): ")
#: ``Py_FatalError``'s second line. After it, Python may print the pending exception (one
#: exception line, or a traceback and its exception line) before the stacks.
_FATAL_RUNTIME = "Python runtime state: "
#: The last line of a dump (3.11+, when any extension module outside the stdlib is loaded).
_FATAL_LAST = "Extension modules: "
#: A stack's header: ``Current thread 0x... (most recent call first):``, ``Thread 0x...
#: [name] (most recent call first):`` (3.14 names threads), ``Stack (most recent call
#: first):`` (one thread), ``Current thread's C stack trace (most recent call first):`` (3.14).
_STACK_HEADER_STARTS = ("Current thread", "Thread 0x", "Stack ")
_STACK_HEADER_END = "(most recent call first):"


@dataclasses.dataclass(frozen=True, slots=True)
class TextRecord:
    """One record made from text: its level, message, extras (from a JSON line), and whether
    it is a grouped block (a traceback or a crash dump) or holds a cut line. ``leveled``: the
    line said its level itself (a prefix, JSON, logfmt), so :func:`redrawn` keeps it even where
    it equals the stream's; not compared, it only tells where ``level`` came from."""

    level: int
    message: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    traceback: bool = False
    truncated: bool = False
    leveled: bool = dataclasses.field(default=False, compare=False)


#: The level of a line that redraws the one before it (text after a carriage return: a
#: progress bar's update, tqdm's on stderr), where its stream says more: progress is no warning.
REDRAWN_LEVEL = logging.INFO


def redrawn(records: list[TextRecord], stream_level: int) -> list[TextRecord]:
    """``records``, made of one line that redraws the one before it or is redrawn by the next
    (a status frame: text ended by a carriage return): those that said no level of their own
    (as a ``LEVEL:`` prefix or JSON would, WARNING included) at :data:`REDRAWN_LEVEL`, if that
    is lower than the stream's."""
    if stream_level <= REDRAWN_LEVEL:
        return records
    return [
        dataclasses.replace(record, level=REDRAWN_LEVEL)
        if record.level == stream_level and not record.leveled and not record.traceback
        else record
        for record in records
    ]


#: What a terminal draws with but a record cannot show: cursor movement (``ESC[A``, ``ESC[2;5H``,
#: ``ESC 7``/``ESC 8``), erasing (``ESC[K``, ``ESC[2J``), the cursor shown or hidden
#: (``ESC[?25l``), colours (``ESC[0m``), and whitespace.
_DRAWING = re.compile(r"(?:\x1b\[[0-9;?]*[A-HJKSTfhlmsu]|\x1b[78]|\s)*")


def is_terminal_drawing(text: str) -> bool:
    """True when ``text`` holds nothing but terminal drawing (see ``_DRAWING``; empty text
    too): what a progress bar writes around its frames (tqdm's nested bars flush a lone
    cursor-up, clear their line with spaces), no text a record could carry."""
    return _DRAWING.fullmatch(text) is not None


#: First characters after which the classifier may find more than a plain line: a JSON object,
#: a bracketed level, a time with a level after it, or the start of a block (Traceback,
#: Exception..., Unhandled..., an exception group's indented drawing, a watchdog's Timeout, a
#: warning's ``/path/file.py:12: UserWarning: ...``), or a redraw (a carriage return kept in
#: front of a progress bar's update: see :func:`redrawn`). A ``LEVEL:`` prefix has its colon
#: within the first 10 characters, and a logfmt line (``level=error ...``) an ``=``. Checked on
#: every line by the fast paths that skip the classifier (a printed line's, the host's
#: fd-level reader), so a set lookup, not a regex.
NOT_PLAIN_START = frozenset("{[< +TEU\t\r0123456789/")
#: The same, for a classifier that starts crash dumps (``fatal_blocks``): ``Fatal Python
#: error:``, ``Windows fatal exception:`` too.
NOT_PLAIN_START_WITH_DUMPS = NOT_PLAIN_START | frozenset("FW")


def _warning_extras(line: str) -> dict[str, Any]:
    """A printed warning's ``category``, named as a warning logged in the runner names its own
    (``builtins.UserWarning``); :mod:`warnings` prints only the class's name, so one that is
    not a builtin keeps that name."""
    match = _WARNING_LINE.match(line)
    if match is None:
        return {}
    name = match["category"]
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Warning):
        name = "builtins." + name
    return {"category": name}


def leads_a_traceback(line: str) -> bool:
    """Whether ``line``, right above a ``Traceback (most recent call last):``, is that
    traceback's message (see :meth:`LineClassifier.lead`): a line that says a level of
    WARNING or more, as a log record's does. A line without one is anybody's: a print just
    before ``traceback.print_exc()`` reads the same as logging's bare last resort, and a pipe
    does not say which writes went together; it stays a record of its own."""
    return (level_of_prefix(line) or 0) >= logging.WARNING


def is_plain_line(line: str, fatal_blocks: bool = False) -> bool:
    """True when a :class:`LineClassifier` (not holding a block; with ``fatal_blocks`` as
    given) would return the line as is, at its default level: no JSON, no level prefix, no
    block start. Conservative: False says "ask the classifier", never the reverse."""
    starts = NOT_PLAIN_START_WITH_DUMPS if fatal_blocks else NOT_PLAIN_START
    return line[:1] not in starts and ":" not in line[:10] and "=" not in line[:10]


class LineClassifier:
    """One stream's lines in, :class:`TextRecord` objects out (see the module docstring)."""

    def __init__(
        self, default_level: int, *, fatal_blocks: bool = True, message_lines: bool = False
    ) -> None:
        self.default_level = default_level
        # False: a ``Fatal Python error:`` line is a line like any other (see the module
        # docstring: text written through Python, where no real dump ever passes).
        self.fatal_blocks = fatal_blocks
        # True: plain lines after an exception line are held as the possible rest of its
        # message, which a chain line after them proves (see the module docstring); for text
        # whose writer cannot say so itself (``continues``).
        self.message_lines = message_lines
        # Those lines, while it is not known whether they are.
        self._tail: list[tuple[str, bool]] = []
        self._block: list[str] = []
        self._block_chars = 0
        self._block_level = logging.ERROR
        self._block_truncated = False
        # True inside the drawing of an exception group (``  | ...`` lines).
        self._in_group = False
        # Empty unless a block is held; then "header": before the frames; "frames": inside
        # them; "done": after the exception line, watching for a chain; "fatal...": inside a
        # crash dump (see _feed_fatal); "warning": after a warning's line, watching for its
        # source line. Public: the print() path reads it, a property call costs more.
        self.phase = ""

    @property
    def holding(self) -> bool:
        """True while lines of an unfinished (or possibly continued) block are held."""
        return bool(self.phase)

    def feed(self, line: str, truncated: bool = False, continues: bool = False) -> list[TextRecord]:
        """The records ``line`` completes (often none or one). ``continues``: the writer knows
        that the line belongs to the block it follows (the :mod:`traceback` module wrote it: the
        rest of an exception's message, or its notes, which text alone cannot tell from the
        next line of output)."""
        if self.phase:
            return self._feed_block(line, truncated, continues)
        if self._starts_block(line):
            return []
        return [self._single(line, truncated)]

    def lead(self, line: str, truncated: bool = False) -> None:
        """Hold ``line``, a :func:`leads_a_traceback` line which the caller saw followed at
        once by ``Traceback (most recent call last):`` in the same read, as the message of
        that traceback: what :mod:`logging` writes for ``log.exception("failed")`` with a
        format that says the level (``ERROR:root:failed``, a child process's
        ``basicConfig()``). The block's level is the line's. Only when nothing is held
        (:attr:`holding` is False)."""
        self._open(line, "header", level_of_prefix(line) or logging.ERROR)
        self._block_truncated = truncated

    def flush(self) -> list[TextRecord]:
        """Whatever is held, as a record (at end of stream, or when the stream went quiet)."""
        if not self.phase:
            return []
        lines = self._block
        # Blank lines held while watching for a chain are not part of the block.
        while lines and not lines[-1].strip():
            lines.pop()
        warning = self.phase == "warning"
        record = TextRecord(
            self._block_level,
            "\n".join(lines),
            _warning_extras(lines[0]) if warning and lines else {},
            traceback=not warning,
            truncated=self._block_truncated,
        )
        self._block = []
        self._block_chars = 0
        self._block_truncated = False
        self.phase = ""
        self._in_group = False
        records = [record] if lines else []
        if self._tail:
            # Not the exception's after all: lines of their own (plain ones, see _feed_block).
            records += [self._single(held, held_truncated) for held, held_truncated in self._tail]
            self._tail = []
        return records

    # -- blocks ------------------------------------------------------------------------------

    def _starts_block(self, line: str) -> bool:
        stripped = line.rstrip()
        if stripped == TRACEBACK_START:
            self._open(line, "frames", logging.ERROR)
        elif stripped.lstrip(" +") == _GROUP_START:
            self._open(line, "frames", logging.ERROR)
            self._in_group = True
        elif stripped.startswith(_BLOCK_HEADERS):
            self._open(line, "header", logging.ERROR)
        elif self.fatal_blocks and stripped.startswith(_FATAL_STARTS):
            self._open(line, "fatal", logging.CRITICAL)
        elif "Warning: " in stripped and _WARNING_LINE.match(stripped):
            self._open(line, "warning", logging.WARNING)
        elif self.fatal_blocks and stripped[:9] == "Timeout (" and _TIMEOUT.fullmatch(stripped):
            # A watchdog's dump, not a crash: the process may well live on (ERROR, as a
            # traceback; with exit=True, the exit account tells the rest).
            self._open(line, "fatal", logging.ERROR)
        else:
            return False
        return True

    def _open(self, line: str, state: str, level: int) -> None:
        self._in_group = False
        self._block = [line]
        self._block_chars = len(line)
        self._block_level = level
        self.phase = state

    def _feed_block(self, line: str, truncated: bool, continues: bool) -> list[TextRecord]:
        state = self.phase
        if state[:5] == "fatal":
            return self._feed_fatal(line, truncated)
        if state == "warning":
            if line[:2] == "  " and line[2:3] != " ":
                self._append(line, truncated)
                return self.flush()
            return self._end_block_before(line, truncated)
        stripped = line.rstrip()
        if state == "frames" and self._in_group and stripped and line[:1] not in " \t|+":
            # A group's drawing has no exception line of its own: it ended before this line.
            state = self.phase = "done"
        if state == "done":
            if stripped in _CHAIN_LINES and self._tail:
                # The lines held were the rest of the exception's message.
                for held, held_truncated in self._tail:
                    self._append(held, held_truncated)
                self._tail = []
            if not stripped and self._tail:
                self._tail.append((line, truncated))
                return []
            if not stripped or stripped in _CHAIN_LINES:
                self._append(line, truncated)
                return []
            if (
                stripped == TRACEBACK_START or stripped.lstrip(" +") == _GROUP_START
            ) and self._after_chain_line():
                self._append(line, truncated)
                self.phase = "frames"
                self._in_group = stripped != TRACEBACK_START
                return self._spill()
            if continues:
                self._append(line, truncated)
                return self._spill()
            if (
                self.message_lines
                and len(self._tail) < MAX_MESSAGE_LINES
                and is_plain_line(line, self.fatal_blocks)
            ):
                self._tail.append((line, truncated))
                return []
            # Not a chain: the held block is complete, and this line starts afresh.
            return self._end_block_before(line, truncated)
        self._append(line, truncated)
        if state == "header":
            # A header is followed by the traceback itself (or the object's repr, for
            # "Exception ignored in"); anything indented or the traceback line stays in.
            if stripped == TRACEBACK_START:
                self.phase = "frames"
            elif stripped.lstrip(" +") == _GROUP_START:
                self.phase = "frames"
                self._in_group = True
        elif state == "frames" and not self._in_group and stripped and line[:1] not in " \t|+":
            # The exception line ends the frames; a chain may follow.
            self.phase = "done"
        return self._spill()

    def _after_chain_line(self) -> bool:
        """True if the last line held that is not blank links a chained exception: Python
        prints one between the parts of a chain; a traceback right after an exception line is
        another one's (``print_exc()`` twice)."""
        for held in reversed(self._block):
            if held.strip():
                return held.strip() in _CHAIN_LINES
        return False

    def _feed_fatal(self, line: str, truncated: bool) -> list[TextRecord]:
        """A line after a crash dump's first: kept if it fits the dump's structure, else the
        dump has ended and the line starts afresh.

        Phases: "fatal" right after the first line; "fatal-state" after ``Py_FatalError``'s
        runtime state line, where Python may print the pending exception; "fatal-tb" inside
        that exception's traceback; "fatal-dump" between stacks; "fatal-stack" inside one
        (its lines are indented: ``  File "...", line N in f``, ``  ...``, ``  <no Python
        frame>``, ``  Garbage-collecting``, 3.14's ``  Binary file ...``).
        """
        stripped = line.rstrip()
        state = self.phase
        if state == "fatal-stack" and line[:2] == "  " and stripped:
            pass
        elif not stripped:
            # Between the header and the stacks, between stacks, before the last line.
            state = "fatal-dump"
        elif state == "fatal" and stripped.startswith(_FATAL_RUNTIME):
            state = "fatal-state"
        elif state == "fatal-state" and stripped == TRACEBACK_START:
            state = "fatal-tb"
        elif state == "fatal-tb" and line[:1] in " \t":
            pass
        elif state in ("fatal-state", "fatal-tb"):
            # The pending exception's line (``ModuleNotFoundError: No module named ...``).
            state = "fatal-dump"
        elif stripped.endswith(_STACK_HEADER_END) and stripped.startswith(_STACK_HEADER_STARTS):
            state = "fatal-stack"
        elif (stripped[:1] == "<" or line[:3] == "  <") and stripped[-1:] == ">":
            # Why a stack is missing: ``  <unable to get the interpreter state>``, a
            # free-threaded build's ``<Cannot show all threads while the GIL is disabled>``.
            state = "fatal-dump"
        elif stripped == "...":
            # More threads than faulthandler dumps.
            state = "fatal-dump"
        elif stripped.startswith(_FATAL_LAST):
            # The dump's last line: emitted now, not when the stream ends or goes quiet.
            self._append(line, truncated)
            return self.flush()
        else:
            # Not a dump's: the dump (or a line that only looked like its start) has ended.
            return self._end_block_before(line, truncated)
        self._append(line, truncated)
        self.phase = state
        return self._spill()

    def _end_block_before(self, line: str, truncated: bool) -> list[TextRecord]:
        """The held block, complete, then what ``line`` (not part of it) starts afresh."""
        records = self.flush()
        if self._starts_block(line):
            return records
        records.append(self._single(line, truncated))
        return records

    def _append(self, line: str, truncated: bool) -> None:
        self._block.append(line)
        self._block_chars += len(line) + 1
        self._block_truncated = self._block_truncated or truncated

    def _spill(self) -> list[TextRecord]:
        """Emit the block in parts once it reaches a cap (a block that never ends)."""
        if len(self._block) < MAX_BLOCK_LINES and self._block_chars < MAX_BLOCK_CHARS:
            return []
        state = self.phase
        level = self._block_level
        in_group = self._in_group
        records = self.flush()
        if state in ("frames", "header") or state[:5] == "fatal":
            # The rest of the block continues as another part, at the same level.
            self.phase = state
            self._block_level = level
            self._in_group = in_group
        return records

    def _single(self, line: str, truncated: bool) -> TextRecord:
        parsed = parse_structured(line)
        if parsed is not None:
            level, message, extras = parsed
            level = level or level_of_prefix(line)
            return TextRecord(
                level or self.default_level, message, extras, False, truncated, bool(level)
            )
        level = level_of_prefix(line)
        return TextRecord(level or self.default_level, line, {}, False, truncated, bool(level))
