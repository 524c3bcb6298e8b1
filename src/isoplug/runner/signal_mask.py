"""The stop signals a process started with blocked in its signal mask, unblocked.

A signal mask survives ``exec``: a supervisor, or a thread of a parent program that blocked
SIGINT, SIGTERM or SIGHUP before it started ``isoplug run`` (or the application embedding a
host), leaves them blocked in the new process, where they stay pending and never reach a
handler nor their default action: nothing stops the command, and a runner ignores the host's
SIGTERM until the host's SIGKILL. An ignored signal (``SIG_IGN``, as ``nohup`` sets it) is a
choice the command honours (see :func:`isoplug.cli.signals.stop_signals`); a blocked one is
never anyone's choice for these processes, so both the command and every runner unblock them
at their start.
"""

from __future__ import annotations

import signal

__all__ = ["STOP_SIGNALS", "unblock_stop_signals"]

#: Signals that ask a process to stop: the command's (Ctrl-C, SIGTERM, a terminal closing).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def unblock_stop_signals() -> tuple[signal.Signals, ...]:
    """Unblock :data:`STOP_SIGNALS` in the calling thread; the ones that were blocked. Call it
    before any other thread starts: a thread takes its mask from the thread that starts it,
    and a process-wide signal goes to any thread that does not block it."""
    before = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return tuple(signum for signum in STOP_SIGNALS if signum in before)
