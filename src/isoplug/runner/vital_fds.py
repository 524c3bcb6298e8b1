"""The descriptors a runner cannot work without: kept from a plugin's ``os.close()`` and
``os.closerange()``, and the runner's clean exit once closed below Python all the same.

A plugin's code may close descriptors it did not open: a daemonizing helper or a cleanup loop
closes every one above 2 (``os.closerange(3, ...)``). The runner survives losing some of its
own: its log connection (the forwarding handler connects again, see
:mod:`isoplug.logs.sender`), the files of its health thread. Not these, which this module
notes (:data:`vital`):

- its control connection to the host: the host's calls, stops and the runner's answers go
  there, and the host takes one per runner process, with a token spent at the connection;
- its health channel: the host kills a runner whose health it cannot learn;
- its event loop's own (the poller, its wake-up descriptors): uvloop aborts the process at
  its next poll (an assertion of libuv's fails) or when a thread wakes it, which no check
  can always come before (the loop's thread may be about to poll as a worker thread closes
  them); asyncio's loop raises ``OSError`` from its poll.

So, in the runner's own process (not in one it forks, where they are copies a daemon should
close), :func:`guard_closes` makes ``os.close()`` and ``os.closerange()`` leave them open:
``os.closerange()`` closes the rest of its range, ``os.close()`` of one raises ``OSError``
(``EBADF``) saying whose it is, and the first time an INFO record says so. They are not the
plugin's to close: no program it runs inherits them (they are close-on-exec).

Closed below Python (a C extension, ``ctypes``, ``os.dup2()`` over one), the runner looks at
them where the plugin's code has just run or may have run, before its loop polls again: after
``setup()``, ``teardown()`` and ``on_config()`` (run on the loop's thread), in the worker
thread of a ``def`` method or event handler before it wakes the loop with the outcome (one
``poll()`` system call for all of them), at every tick of the loop's heartbeat and of the
health thread (a thread of the plugin's that closed them while the loop slept), and when the
asyncio loop fails. Finding
one closed, or its number taken by another file, it says which on its stderr (descriptor 2,
which the host reads and quotes in its exit account), lets its log records reach the host (a
moment at most: the forwarding handler connects again), and exits with
:data:`~isoplug.control.EXIT_DESCRIPTORS_CLOSED`. What these looks cannot catch in time (an
``async def`` method that closes them on the loop's thread: no look per call, which would cost
every call; a loop polling as a worker thread closes them) ends the runner all the same: on
asyncio with that exit, as its poll fails; on uvloop with the abort of libuv's assertion, whose
words the host's account quotes.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import os
import select
import stat
import threading
from collections.abc import Callable
from typing import Any

from isoplug.control import EXIT_DESCRIPTORS_CLOSED
from isoplug.log_guard import guarded_logger
from isoplug.logs.kept_forwarder import kept_forwarder
from isoplug.transport.fd_identity import FdIdentity

__all__ = ["CONTROL", "HEALTH", "LOOP", "VitalDescriptors", "guard_closes", "vital"]

_log = guarded_logger("isoplug.runner")

#: What each kind of vital descriptor is, as the exit's words name it.
CONTROL = "its control connection to the host"
HEALTH = "its health channel"
LOOP = "its event loop's"
#: How long the exit lets the log records still queued reach the host, at most: the host
#: waits its health timeout (2 s by default) for a runner whose connection closed to exit.
_FLUSH_WAIT = 0.5


class VitalDescriptors:
    """The descriptors this runner process cannot work without, each with what it is."""

    def __init__(self) -> None:
        self._noted: list[tuple[str, FdIdentity]] = []
        #: The process's descriptors before its event loop was made (fd: device, inode).
        self._before_loop: dict[int, tuple[int, int]] = {}
        #: Each thread's poll object over them: one may not be polled by two threads at once.
        self._pollers = threading.local()
        #: The process that noted them: a process the plugin forks has them replaced
        #: (:mod:`isoplug.runner.forked_away`), and must not take that for a closure.
        self._pid = 0
        #: Taken, and never given back, by the thread that exits: another thread finding
        #: them closed waits there for the exit, rather than go on (into the loop's poll).
        self._exiting = threading.Lock()

    def note(self, what: str, fd: int) -> None:
        """``fd`` (open now) is one the runner cannot work without; ``what`` says which."""
        try:
            identity = FdIdentity.exact(fd)
        except OSError:
            return  # not open: nothing to lose
        self._noted.append((what, identity))
        self._pid = os.getpid()

    def noting_loop(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        """``factory`` (an event loop factory), noting the descriptors the loop it makes
        opened: those of the process that are new when it returns (see
        :meth:`note_loop_running` for those it opens as it starts running)."""

        def make() -> Any:
            self._before_loop = _open_descriptors()
            loop = factory()
            self.note_loop_running()
            return loop

        return make

    def note_loop_running(self) -> None:
        """Note the descriptors opened since the loop was made (by :meth:`noting_loop`) as
        the loop's: call first thing in the loop's main coroutine (uvloop opens a socket pair
        for signals as it starts running)."""
        if not self._before_loop:
            return  # no loop made by noting_loop(): nothing tells the loop's from the rest
        noted = {identity.fd for _, identity in self._noted}
        for fd, file in _open_descriptors().items():
            if fd not in noted and self._before_loop.get(fd) != file:
                self.note(LOOP, fd)

    def forget(self, fd: int) -> None:
        """``fd`` is about to be closed by the runner itself: no longer one to look at."""
        kept = []
        for what, identity in self._noted:
            if identity.fd == fd:
                identity.release(_os_close)
            else:
                kept.append((what, identity))
        self._noted = kept

    def disarm(self) -> None:
        """Forget them: the runner is ending, and closes them itself."""
        noted, self._noted = self._noted, []
        self._pollers = threading.local()
        if os.getpid() == self._pid:
            for _, identity in noted:
                identity.release(_os_close)

    def kept(self, low: int, high: int) -> list[tuple[str, int]]:
        """Those numbered from ``low`` to ``high - 1`` that are still this process's own (in
        a process forked from the runner: none), lowest first."""
        if not self._noted or os.getpid() != self._pid:
            return []
        found = [
            (what, identity.fd)
            for what, identity in self._noted
            if low <= identity.fd < high and identity.holds()
        ]
        # The duplicates kept to tell the loop's poller from another: a plugin closing them
        # would make a stranger's file under the number look like the loop's replacement.
        found += [
            (f"{what} (a copy it keeps)", identity.duplicate)
            for what, identity in self._noted
            if identity.duplicate is not None and low <= identity.duplicate < high
        ]
        return sorted(found, key=lambda item: item[1])

    def lost(self) -> list[tuple[str, int]]:
        """Those no longer open under their numbers, or whose numbers name another file now
        (one ``fstat`` each); none in a process forked from the runner."""
        if not self._noted or os.getpid() != self._pid:
            return []
        return [(what, identity.fd) for what, identity in self._noted if not identity.holds()]

    def exit_if_lost(self) -> None:
        """Exit as the module docstring says if one of them is lost."""
        lost = self.lost()
        if lost:
            self._exit(lost)

    def exit_if_closed(self) -> None:
        """:meth:`exit_if_lost`, looking first with one ``poll()`` for all of them: it finds
        them closed, not taken by another file (cheap enough for every call of a worker)."""
        if not self._noted:
            return
        try:
            closed = any(events & select.POLLNVAL for _, events in self._poller().poll(0))
        except OSError:
            closed = True  # poll() itself failed: the thorough look decides
        if closed:
            self.exit_if_lost()

    def _poller(self) -> select.poll:
        """This thread's poll object over the descriptors noted so far."""
        mine, noted = self._pollers, self._noted
        poller: select.poll | None = getattr(mine, "poller", None)
        # forget() and disarm() replace the list; note() adds to it.
        if poller is None or mine.noted is not noted or mine.count != len(noted):
            poller = select.poll()
            for _, identity in noted:
                # Events 0: poll() reports an invalid descriptor (POLLNVAL) whatever is asked.
                poller.register(identity.fd, 0)
            mine.poller, mine.noted, mine.count = poller, noted, len(noted)
        return poller

    def _exit(self, lost: list[tuple[str, int]]) -> None:
        self._exiting.acquire()  # never released: the process ends below
        which = _which(lost)
        words = (
            f"isoplug runner: the plugin closed descriptors the runner cannot work without "
            f"({which}); it cannot go on, and exits with code {EXIT_DESCRIPTORS_CLOSED}\n"
        )
        # Said on the descriptor the host reads itself: the log connection may be one of
        # those closed, and sys.stderr goes through it.
        with contextlib.suppress(OSError):
            os.write(2, words.encode())
        # uvloop's loop may abort on the closed descriptors meanwhile (libuv's assertion): its
        # death is then that SIGABRT, with libuv's words last on stderr, which the host's
        # account quotes. faulthandler's dump of every thread would bury them (and these).
        faulthandler.disable()
        forwarder = kept_forwarder()
        if forwarder is not None:
            forwarder.flush(_FLUSH_WAIT)
        # Here: the worker pool imports this module, and leftover_tasks (through the health
        # monitor) the worker pool.
        from isoplug.runner.leftover_tasks import exit_leaving

        exit_leaving(EXIT_DESCRIPTORS_CLOSED)


def _which(descriptors: list[tuple[str, int]]) -> str:
    """``its event loop's: 7, 8; its control connection to the host: 23``."""
    kinds: dict[str, list[str]] = {}
    for what, fd in descriptors:
        kinds.setdefault(what, []).append(str(fd))
    return "; ".join(f"{what}: {', '.join(fds)}" for what, fds in kinds.items())


_os_close = os.close
_os_closerange = os.closerange
#: Whether the INFO record saying that a close left the runner's own open was logged.
_said = [False]


def guard_closes() -> None:
    """Make ``os.close()`` and ``os.closerange()`` leave :data:`vital`'s descriptors open, as
    the module docstring says. Call before any plugin code runs (a module of the plugin's
    that imported them by name would keep the unguarded ones)."""
    os.close = _close
    os.closerange = _closerange


def _close(fd: int) -> None:
    kept = vital.kept(fd, fd + 1) if isinstance(fd, int) else []
    if kept:
        _say_kept(kept, f"os.close({fd})")
        ((what, _),) = kept
        raise OSError(
            errno.EBADF,
            f"Bad file descriptor: {fd} is the isoplug runner's own ({what}); a plugin cannot "
            "close it, and no program it runs inherits it",
        )
    _os_close(fd)


def _closerange(fd_low: int, fd_high: int, /) -> None:
    # Anything but two ints: the original's to accept or refuse.
    ints = isinstance(fd_low, int) and isinstance(fd_high, int)
    kept = vital.kept(fd_low, fd_high) if ints else []
    if not kept:
        _os_closerange(fd_low, fd_high)
        return
    start = fd_low
    for _, fd in kept:
        if start < fd:
            _os_closerange(start, fd)
        start = fd + 1
    if start < fd_high:
        _os_closerange(start, fd_high)
    _say_kept(kept, f"os.closerange({fd_low}, {fd_high})")


def _say_kept(kept: list[tuple[str, int]], call: str) -> None:
    if _said[0]:
        return
    _said[0] = True
    _log.info(
        "the plugin's %s left the runner's own descriptors open (%s): a plugin cannot close "
        "them, and no program it runs inherits them (said once)",
        call,
        _which(kept),
    )


def _open_descriptors() -> dict[int, tuple[int, int]]:
    """Every descriptor of this process now that an event loop may hold (no regular file:
    the log handler's shared memory, which its thread may open meanwhile, is one), with the
    file it names (device, inode); the listing's own is closed by the time it is looked at."""
    found = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                status = os.fstat(int(name))
                if not stat.S_ISREG(status.st_mode):
                    found[int(name)] = (status.st_dev, status.st_ino)
    return found


#: This runner's.
vital = VitalDescriptors()
