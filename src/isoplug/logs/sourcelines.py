"""Source lines for the tracebacks rebuilt from a sender's exceptions, and why they are guarded.

The traceback module reads source lines through :mod:`linecache`, from the receiver's disk, by
the frame's file name. Same machine, same files: that is what gives the fidelity. But the file
name comes from the untrusted sender, and a host formatting a record must never hang or run out
of memory because of it. Before a rebuilt ``exc_info`` is handed out
(:mod:`isoplug.logs.tracebacks`), each frame's file that is not in ``linecache.cache`` yet gets
an entry there, made here by :meth:`SourceGuard.guard`:

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
(every such frame holds an :class:`EntryGuard` in its globals; when the last one goes, the entry
goes), so a sender inventing file names cannot grow linecache without bound.

Residual risks: a regular file on a file system that blocks reads (a FUSE mount) can still stall
the thread that reads it; a ``.py`` file of the host's that holds secrets can have lines printed
(one per frame the plugin invents); an entry the host already had with a real ``mtime`` is
re-read by linecache if that file changes; ``linecache.clearcache()`` drops the guards of records
not yet formatted (the next rebuild puts them back).

Cost: one file read per new source file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import linecache
import os
import stat
import threading
import tokenize
import weakref

from isoplug.wire.sanitize import clean_text, shows_as_is

__all__ = [
    "MAX_LOADED_BYTES",
    "MAX_LOADED_FILES",
    "MAX_SOURCE_BYTES",
    "MAX_SOURCE_LINE_CHARS",
    "SOURCE_SUFFIXES",
    "EntryGuard",
    "SourceGuard",
]

#: Source files larger than this are never read for traceback lines.
MAX_SOURCE_BYTES = 8 * 1024 * 1024
#: Longer source lines are cut (so that one record cannot print megabytes of one line).
MAX_SOURCE_LINE_CHARS = 4096
#: Only files with these suffixes are read for source lines: Python and Cython sources. Other
#: files a sender names (keys, ``.env`` files, anything else the host may read) never are.
SOURCE_SUFFIXES = (".py", ".pyw", ".pyx", ".pxd", ".pxi")
#: Source files one sender (one :class:`SourceGuard`) may cause to be read, and their
#: total size; past either, frames of new files print without source lines.
MAX_LOADED_FILES = 256
MAX_LOADED_BYTES = 64 * 1024 * 1024

# The entries made here (see the module docstring): process-wide, like linecache itself.


class EntryGuard:
    """Held (in its globals) by every rebuilt frame of one file; its entry goes with it."""

    __slots__ = ("__weakref__", "filename")

    def __init__(self, filename: str) -> None:
        self.filename = filename


_guards_lock = threading.RLock()
_live_guards: weakref.WeakValueDictionary[str, EntryGuard] = weakref.WeakValueDictionary()
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


def _new_entry_guard(filename: str) -> EntryGuard:
    guard = EntryGuard(filename)
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
        if not shows_as_is(text) or len(text) > MAX_SOURCE_LINE_CHARS:
            text = clean_text(text, MAX_SOURCE_LINE_CHARS)
        cleaned.append(text + "\n")
    return len(data), cleaned


class SourceGuard:
    """The linecache entries for one sender's frames (one per
    :class:`~isoplug.logs.tracebacks.ExceptionRebuilder`); it counts the source files that
    sender had read, against :data:`MAX_LOADED_FILES` and :data:`MAX_LOADED_BYTES`."""

    def __init__(self) -> None:
        self._loaded: set[str] = set()
        self._loaded_bytes = 0

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

    def guard(self, filename: str) -> EntryGuard | None:
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
                return guard if guard is not None else _new_entry_guard(filename)
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
            return guard if guard is not None else _new_entry_guard(filename)
