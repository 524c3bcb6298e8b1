"""The signals that stop ``isoplug run`` and ``isoplug demo``, and the exit codes they leave.

The first SIGINT (Ctrl-C), SIGTERM, SIGHUP (the terminal closed) or SIGQUIT (Ctrl-\\) asks
for a clean stop; another one kills every runner at once. SIGUSR1 and SIGUSR2 are said and
ignored. A SIGHUP or SIGTERM the command was started ignoring
(``nohup``) stays ignored (:func:`stop_signals`); one it was started with blocked in its signal
mask is unblocked and said (:func:`say_unblocked`). A repeat within :data:`REPEAT_WINDOW` of the
first is the same request, not a second one: ``kill -INT p; kill -INT p``, GNU ``timeout`` (which
signals the command, then its process group) and a terminal that sends SIGHUP and then
SIGTERM (or SIGCONT) all deliver two signals within a few milliseconds.

What the command still does once its event loop ended (``isoplug run`` sending its last
OpenTelemetry records, then writing its console's last lines) waits in
:func:`wait_unless_signalled`: a stop signal then (other than a repeat of the first) ends the
wait at once, exit code :data:`EXIT_INTERRUPTED`, without a traceback; the default actions
(``KeyboardInterrupt``, death by SIGTERM with 143) never apply, up to the process's very end
(:class:`StopSignals`). After a second signal
(:attr:`StopSignals.killed`) there is no wait for a collector: the operator asked for
everything to end at once. The console's last lines are still written while stdout takes
them (milliseconds; a stdout that takes nothing is given up on within seconds: see
:mod:`isoplug.cli.console_writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType

from isoplug.cli.early_signals import IGNORED_SIGNALS, EarlySignals, stop_signals
from isoplug.log_guard import guarded_logger
from isoplug.runner import eventloop

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
    :data:`REPEAT_WINDOW` of it repeats it), and whether one cut a wait short.

    From :meth:`hold` on, the stop signals (and :data:`IGNORED_SIGNALS`) are handled here,
    with no gap until the process exits: while the event loop runs they are passed to it
    (:func:`run_until_stopped`); after it, a repeat is said and ignored, and another signal
    ends what is left to wait for (exit code :data:`EXIT_INTERRUPTED`); once the exit code is
    decided (:meth:`settle`) they are ignored. A handler removed at the loop's end would leave
    the default action (death by the signal, or ``KeyboardInterrupt``) in place for the
    milliseconds before the exit, and Python's own finalization resets every handler of its
    own to the default action: only ``SIG_IGN`` lasts to the very end."""

    def __init__(self, early: EarlySignals | None = None) -> None:
        #: What took the signals while the command imported itself: :meth:`hold` takes them
        #: over, and what came then.
        self._early = early
        self.first: float | None = None
        #: A stop signal ended :func:`wait_unless_signalled`'s wait, or came after the event
        #: loop ended (the plugins had stopped): exit with :data:`EXIT_INTERRUPTED`.
        self.cut_short = False
        #: A second stop signal killed every runner at once: what follows must not wait
        #: either (exit with :data:`EXIT_INTERRUPTED`).
        self.killed = False
        self._held: dict[int, object] = {}
        #: While the event loop runs: passes a signal on to it (from the signal handler).
        self._route: Callable[[signal.Signals], object] | None = None
        #: While :func:`wait_unless_signalled` waits: a stop signal then raises to end it.
        self._waiting = False
        #: What the signal handler has to say: logged later, by the main thread outside the
        #: handler (the console's lock is not re-entrant: a record logged from a handler
        #: that interrupted a record's own logging would wait for itself).
        self._unsaid: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        #: No event loop has run yet: a stop signal now ends the command once it runs, no
        #: plugin started.
        self.loop_ahead = True

    def hold(self) -> bool:
        """Handle the stop signals here from now on; False when they already were (or off
        the main thread, where no handler can be set)."""
        if self._held or threading.current_thread() is not threading.main_thread():
            return False
        early, self._early = self._early, None
        if early is None:
            for signum in (*stop_signals(), *IGNORED_SIGNALS):
                self._held[signum] = signal.signal(signum, self._on_signal)
            return True
        # The signals early took (it knew which were started ignored), and the handlers it
        # found: the ones to give back.
        for signum in early.previous:
            signal.signal(signum, self._on_signal)
        previous, received = early.hand_over()
        for signum, handler in previous.items():
            self._held[signum] = handler
        for signum, at in received:
            self._take(signum, at)
        return True

    def release(self) -> None:
        """Give the signals back to the handlers :meth:`hold` found (a test's process)."""
        for signum, handler in self._held.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)  # type: ignore[arg-type]
        self._held.clear()

    def settle(self) -> None:
        """The exit code is decided: from here to the process's end, the signals held are
        ignored (what a repeat would have said can no longer be shown)."""
        for signum in self._held:
            signal.signal(signum, signal.SIG_IGN)

    def say_unsaid(self) -> bool:
        """Log what the signal handler had to say; whether there was anything."""
        log = guarded_logger("isoplug.cli")
        said = False
        while not self._unsaid.empty():
            level, message = self._unsaid.get_nowait()
            log.log(level, "%s", message)
            said = True
        return said

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        if self._route is not None:
            self._route(received)
            return
        self._take(received, time.monotonic())

    def _take(self, received: signal.Signals, now: float) -> None:
        """``received``, which came at ``now``, before or after the event loop."""
        if received in IGNORED_SIGNALS:
            self._unsaid.put((logging.INFO, ignored_message(received)))
            return
        if self.first is not None and now - self.first < REPEAT_WINDOW:
            self._unsaid.put(
                (
                    logging.INFO,
                    f"{received.name} {(now - self.first) * 1000:.0f} ms after the "
                    "first signal: the same request",
                )
            )
            return
        if self.first is None:
            self.first = now
            if self.loop_ahead:
                # run_until_stopped ends the command as soon as its loop began, no plugin
                # started.
                self._unsaid.put(
                    (logging.WARNING, f"{received.name}: stopping before any plugin started")
                )
                return
        elif self.loop_ahead:
            self.killed = True
            self._unsaid.put((logging.ERROR, f"{received.name} again: stopping now"))
            return
        if self._waiting:
            self._waiting = False
            raise _Signalled(received.name)
        if not self.cut_short:
            self.cut_short = True
            self._unsaid.put(
                (logging.ERROR, f"{received.name}: every plugin has stopped; exiting now")
            )


def ignored_message(received: signal.Signals) -> str:
    """What the command says of a signal of :data:`IGNORED_SIGNALS`."""
    return (
        f"{received.name}: ignored (isoplug gives it no meaning; SIGINT, SIGTERM, SIGHUP and "
        "SIGQUIT stop it)"
    )


def run_until_stopped(
    body: Callable[[asyncio.Event], Awaitable[int]],
    loop: str | None = None,
    signals: StopSignals | None = None,
) -> int:
    """Run ``body(stop)`` in a new event loop and return its exit code; ``loop`` names the
    loop (``"asyncio"``, ``"uvloop"``; default: as :mod:`isoplug.runner.eventloop` picks,
    uvloop when installed, as in the runners). ``signals`` keeps when the first signal came,
    for a wait after this (:func:`wait_unless_signalled`); held before (:meth:`StopSignals.hold`),
    the signals stay held after it.

    The first stop signal sets ``stop`` (``body`` then stops its host cleanly); another one,
    later than :data:`REPEAT_WINDOW`, cancels ``body``, which kills every runner at once.
    """
    signals = signals or StopSignals()
    held_here = signals.hold()
    try:
        result: int = eventloop.run(_with_signals(body, signals), loop)
    finally:
        if held_here:
            signals.release()
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
    held_here = signals.hold()
    worker = threading.Thread(target=work, name="isoplug-stopping", daemon=True)
    try:
        signals.say_unsaid()
        signals._waiting = True
        worker.start()
        worker.join()
    except _Signalled as signalled:
        signals.cut_short = True
        guarded_logger("isoplug.cli").error("%s: stopping now, no longer %s", signalled.name, what)
        cut_short()
    finally:
        signals._waiting = False
        if held_here:
            signals.release()


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
        if signum in IGNORED_SIGNALS:
            log.info("%s", ignored_message(signum))
            return
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

    held_here = signals.hold()
    try:
        with _wakeup(loop):
            # From here on a signal is on_signal's, in the loop; one before was taken by the
            # held handler, and is said now.
            signals._route = lambda signum: loop.call_soon_threadsafe(on_signal, signum)
            signals.say_unsaid()
            if signals.first is not None:
                # A stop request before the host started (while the command imported itself,
                # say): nothing to stop, so no plugin starts; a stop on request, unless a
                # second signal came too.
                return EXIT_INTERRUPTED if signals.killed else EXIT_OK
            return await body(stop)
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    finally:
        # A signal from here on is the held handler's own (the loop is about to end).
        signals._route = None
        signals.loop_ahead = False
        if held_here:
            signals.release()


@contextlib.contextmanager
def _wakeup(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Wake ``loop`` when a signal comes: its handler (a Python one, which runs in the main
    thread between two bytecodes) would otherwise wait for the loop's next event when it
    came just before the loop began to wait. The C handler writes the signal's number to
    this socket, which the loop watches (``loop.add_signal_handler`` does the same)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reading, writing = socket.socketpair()
    reading.setblocking(False)
    writing.setblocking(False)
    previous = signal.set_wakeup_fd(writing.fileno(), warn_on_full_buffer=False)
    loop.add_reader(reading.fileno(), _empty, reading)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        loop.remove_reader(reading.fileno())
        reading.close()
        writing.close()


def _empty(reading: socket.socket) -> None:
    # Running this callback is what runs the handler (Python runs a signal's handler at the
    # next bytecode of the main thread): the bytes themselves mean nothing.
    with contextlib.suppress(OSError):
        while reading.recv(4096):
            pass
