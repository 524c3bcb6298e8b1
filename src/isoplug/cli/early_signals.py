"""The signals that come while the command still imports itself (about a second on a loaded
machine, before :mod:`isoplug.cli.signals` can take them): taken from the first line of
:func:`isoplug.cli.main` on, so that none takes its default action (death by SIGTERM, a core
dump on SIGQUIT) at any moment of the command's life.

- ``isoplug run`` and ``isoplug demo``: each signal is recorded, with when it came, and handed
  to :class:`isoplug.cli.signals.StopSignals` once the command has imported it, which takes
  it as if it had come then: a stop signal ends the command at once, no plugin started.
- ``isoplug new`` and ``isoplug schema``: a stop signal is Ctrl-C (``KeyboardInterrupt``):
  the command ends quietly with 130, as a Ctrl-C does.

This module imports nothing but the standard library's :mod:`signal` and :mod:`time`: it
runs before the command's imports, which it is there to cover.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["COMMAND_STOP_SIGNALS", "IGNORED_SIGNALS", "EarlySignals", "stop_signals"]

#: The stop signals of the command: a runner's (:data:`isoplug.runner.signal_mask.STOP_SIGNALS`,
#: not imported here: that package is the runner's whole API), and SIGQUIT (Ctrl-\\ on a
#: terminal), which asks a program to quit: the command stops its plugins as for SIGTERM
#: rather than die by its default action (a core dump, the runners left to the parent-death
#: signal, no teardown(), no exit account).
COMMAND_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

#: Signals ``isoplug run`` and ``demo`` take and ignore, said at INFO: as PID 1 isoplug passes
#: them on to the command (:mod:`isoplug.cli.init_process`), and their default action would
#: end it at once, without stopping a plugin, with no message and no exit account.
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)

#: The commands that take the stop signals themselves (:class:`isoplug.cli.signals.StopSignals`).
_HOSTING = ("run", "demo")
#: The commands for which a stop signal is Ctrl-C.
_TOOLS = ("new", "schema")

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
#: A signal that came, and when (``time.monotonic()``).
_Received = tuple[signal.Signals, float]


def stop_signals() -> tuple[signal.Signals, ...]:
    """The stop signals the command listens to: those of :data:`COMMAND_STOP_SIGNALS` that it
    was not started ignoring. ``nohup`` starts it with SIGHUP ignored so that a closed terminal
    does not stop it, and a supervisor may ignore SIGTERM on purpose: a handler over that
    choice would undo it. SIGINT and SIGQUIT are listened to whatever their start: a shell
    without job control (a script) starts every background command with both ignored, not at
    the user's asking, and ``kill -INT`` (or ``-QUIT``) is how such a script stops ``isoplug
    run DIR &``."""
    return tuple(
        signum
        for signum in COMMAND_STOP_SIGNALS
        if signum in _SHELLS_IGNORE or signal.getsignal(signum) != signal.SIG_IGN
    )


#: What a shell without job control ignores in every background command it starts (POSIX).
_SHELLS_IGNORE = (signal.SIGINT, signal.SIGQUIT)


class EarlySignals:
    """The signals one command took before it could handle them itself: see the module."""

    def __init__(self) -> None:
        #: What came, and when (``time.monotonic()``), in order.
        self.received: list[_Received] = []
        #: The handlers found, to give back (or to hand over with the signals).
        self.previous: dict[signal.Signals, _Handler] = {}
        self._handed_over = False

    @classmethod
    def take(cls, command: str | None) -> EarlySignals | None:
        """Take the signals ``command`` (``run``, ``demo``, ``new``, ``schema``) must not
        leave to their default action; None for another command (``--help``), or off the
        main thread, where no handler can be set (a caller's program: its own then)."""
        taken = cls()
        if command in _HOSTING:
            listened = (*stop_signals(), *IGNORED_SIGNALS)
            handler: _Handler = taken._record
        elif command in _TOOLS:
            # Each as Ctrl-C, SIGINT too: a script's shell starts a background command with
            # it ignored, as it does `run`'s, which takes it whatever its start.
            listened = stop_signals()
            handler = signal.default_int_handler
        else:
            return None
        try:
            for signum in listened:
                taken.previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: nothing was set
            return None
        return taken

    def hand_over(self) -> tuple[dict[signal.Signals, _Handler], list[_Received]]:
        """For the one who sets its own handlers over these: the handlers found before this
        (its to give back) and what came so far. Call it once the new handlers are set, so
        that nothing comes between."""
        self._handed_over = True
        return self.previous, self.received

    def end(self, ending_process: bool) -> None:
        """The command ended without handing them over (a usage error, ``new``, ``schema``):
        ignored to the process's end when it ends with the command (only ``SIG_IGN`` lasts
        through the interpreter's finalization, and the exit code is decided), else the
        handlers found given back (a caller's program goes on)."""
        if self._handed_over:
            return
        for signum, handler in self.previous.items():
            given_back = handler if handler is not None else signal.SIG_DFL
            signal.signal(signum, signal.SIG_IGN if ending_process else given_back)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append((signal.Signals(signum), time.monotonic()))
