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

from isoplug.wire.sanitize import clean_path

__all__ = ["say_error", "shown", "shown_argument"]

#: Cap for one message (every plugin's reason when all failed, each capped, fits many).
MAX_MESSAGE_CHARS = 100_000


def shown(value: object) -> str:
    """``value`` (a path, a key, a message quoting them) as the terminal may show it."""
    return clean_path(value, MAX_MESSAGE_CHARS)


def shown_argument(path: object) -> str:
    """``path`` as an argument of a command the user is told to run: quoted for a shell where
    it must be (a space, a quote), then shown as :func:`shown` shows it."""
    return shown(shlex.quote(str(path)))


def say_error(command: str, message: str) -> None:
    """``isoplug COMMAND: MESSAGE`` on stderr, the message sanitized whole: whatever of the
    operator's text it quotes, however it was formatted in."""
    print(f"isoplug {command}: {shown(message)}", file=sys.stderr, flush=True)
