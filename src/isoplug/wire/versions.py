"""What a protocol version refusal says, the same on both sides of it.

A refusal is quoted far from where it was made: the listener logs it, the refused side raises
it, a runner writes it on its stderr and the host quotes that stderr. Words such as "this side"
and "peer" change meaning with each hop (a runner once wrote that *the peer* spoke its own
versions). So each side is named by its part in the connection (the listener, the client), with
its protocol versions and its isoplug version, and the fix is said with them.
"""

from __future__ import annotations

import re

import isoplug.release
from isoplug.errors import VersionMismatch
from isoplug.wire.messages import Hello, Reject
from isoplug.wire.sanitize import clean_text

__all__ = [
    "VERSION_FIX",
    "library_version",
    "refused_by_listener",
    "refused_client",
    "side_text",
]

#: What a user does about two sides that share no protocol version.
VERSION_FIX = "install one isoplug version on both sides"

#: Longest isoplug version quoted from a peer (a version is a dozen characters).
_MAX_VERSION_CHARS = 40

#: What an isoplug older than the Reject's version fields sent as the reason of a version
#: refusal, worded from the listener's side ("peer": the client).
_OLD_WORDS = re.compile(
    r"peer speaks protocol versions (\d+)\.\.(\d+), this side speaks (\d+)\.\.(\d+)"
)


def library_version() -> str:
    """This process's isoplug version (read when asked: a test may set another)."""
    return isoplug.release.VERSION


def side_text(low: int, high: int, library: str) -> str:
    """``1..1 (isoplug 0.1.0)``: one side's protocol versions and, if known, its isoplug."""
    library = clean_text(library, _MAX_VERSION_CHARS)
    return f"{low}..{high} (isoplug {library})" if library else f"{low}..{high}"


def _mismatch(listener: str, client: str) -> str:
    return (
        f"no protocol version in common: the listener speaks protocol versions {listener}, "
        f"the client {client}; {VERSION_FIX}"
    )


def refused_client(hello: Hello, low: int, high: int) -> VersionMismatch:
    """The listener's error for a client whose versions are not its own; its text is what
    the client is told too."""
    listener = side_text(low, high, library_version())
    client = side_text(hello.min_version, hello.max_version, hello.library_version)
    error = VersionMismatch(_mismatch(listener, client))
    error.peer_versions = (hello.min_version, hello.max_version)
    error.peer_library = clean_text(hello.library_version, _MAX_VERSION_CHARS)
    return error


def refused_by_listener(reject: Reject, low: int, high: int) -> VersionMismatch:
    """The client's error for the listener's version refusal ``reject``, the client speaking
    ``low..high``."""
    client = side_text(low, high, library_version())
    if reject.max_version > 0:
        listener_range = (reject.min_version, reject.max_version)
        listener_library = clean_text(reject.library_version, _MAX_VERSION_CHARS)
    else:
        # An older listener says its versions only in its words, from its own side.
        old = _OLD_WORDS.search(reject.reason)
        if old is None:
            reason = clean_text(reject.reason, 1000)
            error = VersionMismatch(
                f"the listener refused the protocol versions of this client, {client}: "
                f"{reason}; {VERSION_FIX}"
            )
            return error
        listener_range = (int(old.group(3)), int(old.group(4)))
        listener_library = ""
    error = VersionMismatch(_mismatch(side_text(*listener_range, listener_library), client))
    error.peer_versions = listener_range
    error.peer_library = listener_library
    return error
