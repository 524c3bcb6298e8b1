"""What the commands say on stderr, and how.

The operator's own text (paths, ``--config`` keys and values, option values) comes from
outside the process as much as a plugin's output does (a folder named with a terminal escape,
a ``--config`` file generated or checked out from elsewhere), so it passes through the one
sanitizer (:mod:`isoplug.wire.sanitize`) before it reaches the terminal: control characters
are shown as escapes, and a path's bytes that are not UTF-8 as ``\\udcXX``, as
:class:`~isoplug.host.manifest.ManifestError` shows a folder's name.

Each message goes to stderr in one ``write()`` (:func:`write_stderr`): stderr is often the
very file the console writes its lines to from a thread of its own (``> log 2>&1``, a
container's terminal), and a message written in pieces (``print`` writes its text, then its
newline) gets a console line spliced into it. A stderr that cannot be written (its reader
gone: a log shipper that died) ends nothing: what would go there is lost, the command goes on
with its console on stdout and ends with the exit code it would have had.
"""

from __future__ import annotations

import os
import select
import shlex
import sys
from typing import TextIO

from isoplug.wire.sanitize import clean_message, clean_path

__all__ = ["say_error", "shown", "shown_argument", "shown_message", "silence", "write_stderr"]

#: Cap for one message (every plugin's reason when all failed, each capped, fits many).
MAX_MESSAGE_CHARS = 100_000


def shown(value: object) -> str:
    """``value`` (a path, a key, a line quoting them) as the terminal may show it: on one
    line (a name's tab or line break escaped)."""
    return clean_path(value, MAX_MESSAGE_CHARS)


def shown_message(message: object) -> str:
    """A message of the command's, of one or several lines, as the terminal may show it: what
    of the operator's text it quotes sanitized, its own line breaks kept."""
    return clean_message(message, MAX_MESSAGE_CHARS)


def shown_argument(path: object) -> str:
    """``path`` as an argument of a command the user is told to run: quoted for a shell where
    it must be (a space, a quote), then shown as :func:`shown` shows it."""
    return shown(shlex.quote(str(path)))


def say_error(command: str, message: str) -> None:
    """``isoplug COMMAND: MESSAGE`` on stderr, the message sanitized whole: whatever of the
    operator's text it quotes, however it was formatted in."""
    write_stderr(f"isoplug {command}: {shown_message(message)}")


def write_stderr(text: str) -> None:
    """``text`` and its newline on stderr, in one ``write()`` where stderr is a file (see the
    module docstring). An error writing it (a closed pipe, EIO, a full disk) points stderr at
    ``/dev/null``: nothing more is said there, and nothing fails for it, the interpreter's
    last flush included."""
    stderr = sys.stderr
    if stderr is None:
        return  # no stderr at all: the exit code is all that can still tell
    try:
        descriptor = stderr.fileno()
    except (OSError, ValueError, AttributeError):
        descriptor = -1  # not a file (pytest's capture): its own methods
    try:
        if descriptor < 0:
            stderr.write(text + "\n")
            stderr.flush()
            return
        # To the descriptor, not through the stream: a write that waits on a stuck stderr
        # would hold the stream's lock, which the interpreter's exit then takes to flush it
        # (and aborts, "could not acquire lock ... at interpreter shutdown"). Nothing waits
        # in its buffer: Python's stderr is line-buffered, and isoplug writes here only.
        encoding = getattr(stderr, "encoding", None) or "utf-8"
        _write_all(descriptor, (text + "\n").encode(encoding, "backslashreplace"))
    except (OSError, ValueError):
        silence(stderr)


def silence(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at ``/dev/null``: its reader is gone, and what is still
    buffered in it must not fail the next flush (at exit: ``Exception ignored ...``)."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a file (a test's StringIO): nothing buffered below Python
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(descriptor, view) :]
        except BlockingIOError:
            # A stderr left non-blocking by another program: wait until it takes more.
            poller = select.poll()
            poller.register(descriptor, select.POLLOUT)
            poller.poll()
