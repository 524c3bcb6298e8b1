"""The signals that stop ``isoplug run`` and ``isoplug demo``, and the exit codes they leave.

The first SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal closed) asks for a clean stop;
another one kills every runner at once. A SIGHUP or SIGTERM the command was started ignoring
(``nohup``) stays ignored (:func:`stop_signals`); one it was started with blocked in its signal
mask is unblocked and said (:func:`say_unblocked`). A repeat within :data:`REPEAT_WINDOW` of the
first is the same request, not a second one: ``kill -INT p; kill -INT p``, GNU ``timeout`` (which
signals the command, then its process group) and a terminal that sends SIGHUP and then
SIGTERM (or SIGCONT) all deliver two signals within a few milliseconds.

What the command still does once its event loop ended (``isoplug run`` sending its last
OpenTelemetry records, then writing its console's last lines) waits in
:func:`wait_unless_signalled`: a stop signal then (other than a repeat of the first) ends the
wait at once, exit code :data:`EXIT_INTERRUPTED`, without a traceback; the default actions
(``KeyboardInterrupt``, death by SIGTERM with 143) never apply. After a second signal
(:attr:`StopSignals.killed`) there is no wait for a collector: the operator asked for
everything to end at once. The console's last lines are still written while stdout takes
them (milliseconds; a stdout that takes nothing is given up on within seconds: see
:mod:`isoplug.cli.console_writer`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType

from isoplug.log_guard import guarded_logger
from isoplug.runner import eventloop
from isoplug.runner.signal_mask import STOP_SIGNALS

#: Exit code: stopped on request, and nothing went wrong.
EXIT_OK = 0
#: Exit code: a plugin was skipped (invalid manifest) or failed during the run (with
#: ``--reload``: at the end), every plugin failed for good (the command then ends on its own,
#: see :mod:`isoplug.cli.running`), or there was nothing to run; ``isoplug demo``: nothing to
#: run, or its plugins not ready in time (:data:`isoplug.cli.demo.DEMO_READY_WITHIN`).
EXIT_PLUGIN_FAILED = 1
#: Exit code: the command line or its files are unusable (argparse's code for usage errors).
EXIT_USAGE = 2
#: Exit code when the system refused what the command needs before it could run (out of
#: file descriptors, threads or processes: a limit too low): said on stderr with the limit.
#: sysexits.h's ``EX_OSERR``.
EXIT_SYSTEM_REFUSED = 71
#: Exit code after a second signal killed every runner at once (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Exit code when stdout could not be written (a full disk, ``> /dev/full``, an I/O error):
#: the plugins were stopped, as when its reader goes away. sysexits.h's ``EX_IOERR``.
EXIT_CONSOLE_FAILED = 74
#: Exit code when the reader of stdout went away (a closed pipe: ``| head``); 128 + SIGPIPE,
#: what a shell shows for a command killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141


def stop_signals() -> tuple[signal.Signals, ...]:
    """The stop signals the command listens to: those of :data:`STOP_SIGNALS` that it was not
    started ignoring. ``nohup`` starts it with SIGHUP ignored so that a closed terminal does
    not stop it, and a supervisor may ignore SIGTERM on purpose: a handler over that choice
    would undo it. SIGINT is listened to whatever its start: a shell without job control (a
    script) starts every background command with SIGINT ignored, not at the user's asking,
    and ``kill -INT`` is how such a script stops ``isoplug run DIR &``."""
    return tuple(
        signum
        for signum in STOP_SIGNALS
        if signum == signal.SIGINT or signal.getsignal(signum) != signal.SIG_IGN
    )


def say_unblocked(blocked: tuple[signal.Signals, ...]) -> None:
    """Say which stop signals the command found blocked in the signal mask it started with,
    and unblocked (:func:`isoplug.runner.signal_mask.unblock_stop_signals`): an operator
    whose supervisor blocks them learns why they work here and may not elsewhere."""
    if blocked:
        guarded_logger("isoplug.cli").info(
            "stop signals blocked in the signal mask isoplug started with (its parent "
            "blocked them): %s; unblocked, so that they stop it as usual",
            ", ".join(signum.name for signum in blocked),
        )


#: A stop signal this soon (seconds) after the first one repeats it rather than asking again.
REPEAT_WINDOW = 0.3


class StopSignals:
    """The stop signals one command got: when the first came (a signal within
    :data:`REPEAT_WINDOW` of it repeats it), and whether one cut a wait short."""

    def __init__(self) -> None:
        self.first: float | None = None
        #: A stop signal ended :func:`wait_unless_signalled`'s wait: exit with
        #: :data:`EXIT_INTERRUPTED`.
        self.cut_short = False
        #: A second stop signal killed every runner at once: what follows must not wait
        #: either (exit with :data:`EXIT_INTERRUPTED`).
        self.killed = False


def run_until_stopped(
    body: Callable[[asyncio.Event], Awaitable[int]],
    loop: str | None = None,
    signals: StopSignals | None = None,
) -> int:
    """Run ``body(stop)`` in a new event loop and return its exit code; ``loop`` names the
    loop (``"asyncio"``, ``"uvloop"``; default: as :mod:`isoplug.runner.eventloop` picks,
    uvloop when installed, as in the runners). ``signals`` keeps when the first signal came,
    for a wait after this (:func:`wait_unless_signalled`).

    The first stop signal sets ``stop`` (``body`` then stops its host cleanly); another one,
    later than :data:`REPEAT_WINDOW`, cancels ``body``, which kills every runner at once.
    """
    result: int = eventloop.run(_with_signals(body, signals or StopSignals()), loop)
    return result


def wait_unless_signalled(
    work: Callable[[], None], signals: StopSignals, what: str, cut_short: Callable[[], None]
) -> None:
    """Run ``work`` (in a thread) and wait until it is done, unless a stop signal comes
    first (a repeat of the first signal within :data:`REPEAT_WINDOW` aside): then say so,
    call ``cut_short()`` (which must not wait) and return at once, ``signals.cut_short``
    set. ``what``: the wait, for the message (``"sending the last OpenTelemetry records"``).
    Off the main thread (no signal handler can be set there), just ``work()``."""
    if threading.current_thread() is not threading.main_thread():
        work()
        return
    log = guarded_logger("isoplug.cli")
    raised = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        now = time.monotonic()
        name = signal.Signals(signum).name
        if raised or (signals.first is not None and now - signals.first < REPEAT_WINDOW):
            return
        raised = True
        if signals.first is None:
            signals.first = now
        raise _Signalled(name)

    worker = threading.Thread(target=work, name="isoplug-stopping", daemon=True)
    previous: dict[signal.Signals, object] = {}
    try:
        for signum in stop_signals():
            previous[signum] = signal.signal(signum, on_signal)
        worker.start()
        worker.join()
    except _Signalled as signalled:
        signals.cut_short = True
        log.error("%s: stopping now, no longer %s", signalled.name, what)
        cut_short()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)  # type: ignore[arg-type]


class _Signalled(Exception):
    """Raised by the signal handler of :func:`wait_unless_signalled` to end its wait."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


async def _with_signals(
    body: Callable[[asyncio.Event], Awaitable[int]], signals: StopSignals | None = None
) -> int:
    if signals is None:
        signals = StopSignals()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    log = guarded_logger("isoplug.cli")

    def on_signal(signum: signal.Signals) -> None:
        now = time.monotonic()
        first = signals.first
        if first is None:
            signals.first = now
            log.warning("%s: stopping every plugin (again to kill them at once)", signum.name)
            stop.set()
        elif now - first < REPEAT_WINDOW:
            log.info(
                "%s %.0f ms after the first signal: the same request (again to kill them at once)",
                signum.name,
                (now - first) * 1000,
            )
        else:
            log.error("%s again: killing every runner now", signum.name)
            signals.killed = True
            task.cancel(f"{signum.name} again")

    listened = stop_signals()
    for signum in listened:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await body(stop)
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    finally:
        for signum in listened:
            loop.remove_signal_handler(signum)
