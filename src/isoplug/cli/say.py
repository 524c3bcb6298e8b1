"""What the commands say of the operator's own text: paths, ``--config`` keys and values,
option values. They come from outside the process as much as a plugin's output does (a
folder named with a terminal escape, a ``--config`` file generated or checked out from
elsewhere), so they pass through the one sanitizer (:mod:`isoplug.wire.sanitize`) before they
reach the terminal: control characters are shown as escapes, and a path's bytes that are not
UTF-8 as ``\\udcXX``, as :class:`~isoplug.host.manifest.ManifestError` shows a folder's name.
"""

from __future__ import annotations

import shlex
import sys

from isoplug.wire.sanitize import clean_message, clean_path

__all__ = ["say_error", "shown", "shown_argument", "shown_message"]

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
    print(f"isoplug {command}: {shown_message(message)}", file=sys.stderr, flush=True)
