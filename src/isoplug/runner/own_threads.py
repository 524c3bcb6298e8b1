"""The runner's own threads when the kernel refuses one (a cgroup's ``pids.max``, ``ulimit
-u``, ``ulimit -v``): said as the runner's, on ``isoplug.runner`` and naming the limit
(:mod:`isoplug.thread_limits`), never as an uncaught exception of the plugin's.

Under such a limit a runner that fit while it ran has no task left for the threads its stop
starts: those do their work without one (:func:`start_or_go_without`), so that the plugins'
``teardown()`` still runs. A runner that cannot start the threads it needs to run at all
exits with :data:`~isoplug.control.EXIT_NO_THREAD` (:func:`say_no_thread`), a crash the host
restarts with backoff, as the shortage may pass.
"""

from __future__ import annotations

import contextlib
import os
import threading

from isoplug.log_guard import guarded_logger
from isoplug.logs.kept_forwarder import kept_forwarder
from isoplug.thread_limits import ThreadShortage, start_thread, thread_limits

__all__ = ["say_no_thread", "start_or_go_without"]

_log = guarded_logger("isoplug.runner")

#: Whether a thread was refused already: the limits are said in full the first time only.
_refused_before = [False]


def start_or_go_without(thread: threading.Thread, purpose: str, instead: str) -> bool:
    """Start ``thread`` (``purpose`` names it); False when the kernel refuses it, said in a
    WARNING with ``instead``, what the runner does without it."""
    try:
        start_thread(thread, purpose)
    except ThreadShortage as exc:
        said = str(exc) if not _refused_before[0] else f"cannot start a thread ({purpose}) either"
        _refused_before[0] = True
        _log.warning("%s; %s", said, instead)
        return False
    return True


def say_no_thread(error: RuntimeError) -> None:
    """Say that the runner cannot go on without a thread the kernel refused (``error``): on
    ``isoplug.runner`` while its records reach the host, else on its stderr, which the host
    reads itself (the thread refused may be log forwarding's own)."""
    words = str(error) if isinstance(error, ThreadShortage) else f"{error}; {thread_limits()}"
    text = f"the runner cannot go on: {words}"
    if kept_forwarder() is not None:
        _log.error("%s", text)
        return
    with contextlib.suppress(OSError):  # no stderr either: the exit code says it alone
        os.write(2, f"isoplug runner: {text}\n".encode())
