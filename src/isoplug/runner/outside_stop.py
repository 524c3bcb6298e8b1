"""A SIGTERM the host did not send: the runner stops as at the host's request, its plugins'
teardown included, rather than die at once.

systemd's default ``KillMode=control-group`` (and anyone's ``kill`` of a whole process tree)
sends SIGTERM to every process of the service at once: the host, and each runner. By Python's
default action a runner then died at once, its plugins' ``teardown()`` never run, while its
host, stopping on the same signal, was about to stop it in order. So a runner that gets
SIGTERM while its host has not begun stopping it says so (a WARNING, which the host shows as
the plugin's) and stops as the host's shutdown request stops it, within its teardown timeout.
If the host begins stopping it meanwhile (it got the same signal), the runner exits 0, stopped
on request. If not (the signal was for this runner alone), the runner ends by SIGTERM once
stopped, as the signal asked: the host's account says what ended it, and the plugin is
restarted as after any end the host did not ask for.

The host tells the runner that its stop began, on the runner's stdin (the lifeline a thread
reads whatever the loop does: :mod:`isoplug.runner.lifeline`), before it asks it over the
control connection: a SIGTERM from outside after that (a service manager's, which reached the
host first) changes nothing, the stop being under way, teardown included. The host's own
SIGTERM (its stop's second step, for a runner that did not exit within ``shutdown_timeout``)
must still end the runner at once, whatever its event loop is doing: a blocked loop is the
usual reason a runner has not exited by then. So the host says first, with a second notice,
that its SIGTERM comes next, and gives the runner a moment: reading it, that thread gives
SIGTERM its default action back, set below Python (a handler would wait for the main thread to
run Python). A plugin that set a SIGTERM handler of its own keeps it: it handles the host's
SIGTERM as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from isoplug.log_guard import guarded_logger

__all__ = ["end_if_only_signalled", "forget_in_forked_child", "host_stops", "listen"]

_log = guarded_logger("isoplug.runner")

#: Set once the host began stopping this runner (from its stdin, or its shutdown request).
_host_stopping = threading.Event()
#: Set once the host said that its SIGTERM comes next.
_host_terminating = threading.Event()


class _Listening:
    """What :func:`listen` set up: the loop, how the runner stops, whether a SIGTERM came."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], teardown_timeout: float
    ) -> None:
        self.loop = loop
        self.stop = stop
        self.teardown_timeout = teardown_timeout
        #: A SIGTERM from outside started the runner's stop.
        self.signalled = False


_listening: list[_Listening] = []


def listen(stop: Callable[[], None], teardown_timeout: float) -> None:
    """On the runner's event loop, once connected to the host and before any plugin code:
    have a SIGTERM the host did not send call ``stop()``, which stops the runner as the host's
    shutdown request does. A SIGTERM ignored at the start (the host's own choice, inherited)
    stays ignored."""
    if _host_stopping.is_set() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        return
    _listening[:] = [_Listening(asyncio.get_running_loop(), stop, teardown_timeout)]
    # A handler of Python's, not the loop's add_signal_handler: the one whose identity tells
    # whether a plugin replaced it (see host_stops), and which never shares the loop's wake-up
    # with a process a plugin forks.
    signal.signal(signal.SIGTERM, _on_sigterm)


def host_stops(*, terminating: bool = False) -> None:
    """The host began stopping this runner: from now on an outside SIGTERM changes nothing.
    ``terminating``: the host's SIGTERM comes next, and ends the runner at once, as by
    default. From any thread."""
    _host_stopping.set()
    if not terminating:
        return
    _host_terminating.set()
    if _listening and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        _default_action_below_python(signal.SIGTERM)


def end_if_only_signalled() -> None:
    """At the runner's very end (its host told goodbye, log forwarding ended): if a SIGTERM
    from outside alone stopped it, end by that signal (the host's account then names it);
    otherwise return."""
    if _listening and _listening[0].signalled and not _host_stopping.is_set():
        _end_by(signal.SIGTERM)


def forget_in_forked_child() -> None:
    """In a process a plugin forks: SIGTERM's default action, as in any process; the handler
    would stop the runner's copy, which does not serve."""
    if _listening and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _listening.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Runs in the main thread between two bytecodes of whatever it ran: hands over to the
    # loop, and does nothing else there.
    if _host_terminating.is_set():
        # The host's own, come before the notice's default action took effect.
        _end_by(signal.SIGTERM)
    if _host_stopping.is_set():
        # An outside one (a service manager's, which reached the host first) while the
        # host's stop is under way, teardown included: nothing to do.
        return
    try:
        _listening[0].loop.call_soon_threadsafe(_stop_for_outside_signal)
    except (IndexError, RuntimeError):
        _end_by(signal.SIGTERM)  # the loop is closed: the runner is ending anyway


def _stop_for_outside_signal() -> None:
    listening = _listening[0] if _listening else None
    if listening is None or listening.signalled or _host_stopping.is_set():
        return  # stopping already
    listening.signalled = True
    _log.warning(
        "SIGTERM, not sent by the host (a service manager signalling every process of the "
        "service at once, or a kill from outside): stopping as at the host's request, "
        "teardown included (within %g s)",
        listening.teardown_timeout,
    )
    listening.stop()


def _end_by(signum: signal.Signals) -> None:
    """End the process by ``signum``'s default action, now."""
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    os._exit(128 + signum)  # only if the signal is blocked in this thread


def _default_action_below_python(signum: signal.Signals) -> None:
    """``signum``'s default action for the process, set from any thread (Python lets only the
    main thread set a handler). Python's own table still names the old handler, which its
    C handler no longer reaches."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.restype = ctypes.c_void_p
        libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
        libc.signal(int(signum), None)  # SIG_DFL
