"""Whether a runner runs the host's isoplug: told from its hello, before it is welcomed.

A runner imports isoplug when it starts, from what is installed then; the host imported it
when it started. Upgrading isoplug under a running host makes the two differ for every runner
started since (a restart, a recycle, a new plugin). Where both still share a protocol version
that works, but the runner runs code the host does not: said once for each version seen, at
WARNING. Where they share none, the host's listener refuses the runner at every start, and no
restart can help: the runner's exit is a lasting failure (:meth:`RunnerVersions.lasting`),
which says what to do, instead of a crash loop of refusals.
"""

from __future__ import annotations

import threading

from isoplug.log_guard import guarded_logger
from isoplug.wire import Hello
from isoplug.wire.messages import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION
from isoplug.wire.sanitize import clean_text
from isoplug.wire.versions import library_version, side_text

__all__ = ["RunnerVersions"]

_log = guarded_logger("isoplug.host")

#: Longest isoplug version quoted from a hello (outside text).
_MAX_VERSION_CHARS = 40


class RunnerVersions:
    """The isoplug versions a host's runners connected with, against the host's own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Runner isoplug versions other than the host's, said already.
        self._said: set[str] = set()

    def lasting(self, runner_id: str, hello: Hello) -> str | None:
        """Why the runner ``runner_id`` that sent ``hello`` can never be welcomed (it shares
        no protocol version with the host: every start would be refused again), None if it
        can; a runner whose isoplug differs from the host's is said once per version."""
        theirs = clean_text(hello.library_version, _MAX_VERSION_CHARS)
        ours = library_version()
        if max(hello.min_version, MIN_PROTOCOL_VERSION) > min(
            hello.max_version, MAX_PROTOCOL_VERSION
        ):
            runner = side_text(hello.min_version, hello.max_version, theirs)
            host = side_text(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION, ours)
            return (
                f"its isoplug shares no protocol version with the host's: the runner speaks "
                f"protocol versions {runner}, the host {host}, and every start would be refused "
                "again; was isoplug upgraded under the running host? Restart the host (every "
                "runner imports the isoplug installed where the host's was imported from, "
                "whatever its plugin's `python`)"
            )
        if theirs and theirs != ours:
            with self._lock:
                first = theirs not in self._said
                self._said.add(theirs)
            if first:
                _log.warning(
                    "runner %s runs isoplug %s, the host isoplug %s (was isoplug upgraded under "
                    "the running host? every runner started since imports the installed one): "
                    "they share a protocol version and work together, but restart the host to "
                    "run one isoplug version everywhere",
                    runner_id,
                    theirs,
                    ours,
                )
        return None
