"""Connections that ended while their sender lives on: their accounting waits.

A sender's log connection may end without a goodbye while the process goes on: the program
closed the socket's descriptor (a daemonizing plugin, an fd-cleanup loop), and the sender
thread connects again (:mod:`isoplug.logs.sender`). Until its new connection has announced a
new ledger, every record it accepts is counted in the old connection's ledger and kept in the
old ring (:mod:`isoplug.logs.ring`), and nowhere else a receiver could read. Accounting for the
old connection at once -- one read of the ledger when the connection ends -- missed them: a
sender killed before its new connection announced itself took them along, delivered by no
connection and counted by none.

So a receiver whose connection ends without a goodbye, from a sender that announced a ledger
and whose kernel-vouched pid still runs, hands the end's accounting to :class:`PendingEnds`
(its ledger and ring stay open) until the first of:

- a new connection of the same chain (:mod:`isoplug.logs.chains`) that resumes it brings its
  first records: the old end is accounted for on that connection's thread, before those are
  replayed, only up to where the new one resumes (``resumed_after``): what follows is the new
  connection's, in its own ledger and ring. Not at the new connection's announcement: the
  sender hands over (sets the old ledger back, moves what is unsent into the new ring) just
  after it, and a kill in between left the unsent records counted by the old ledger alone;
  the exit then resolves the end, reading the old ledger whole;
- the process exits: watched with a pidfd (``poll()``, no cost while it runs), or where there
  is none by looking at ``/proc/<pid>`` every :data:`POLL_INTERVAL`, on a thread of its own
  that runs only while something is pending, never on an event loop; the old ledger and ring
  are read then, the records they still hold replayed as recovered, the rest counted lost;
- a later connection of the chain is accounted for after the process exited, before the
  watcher saw the exit (:meth:`PendingEnds.settle`): the earlier end goes first, so that what
  its ring gives back is replayed before the later end counts what its own ring could not
  give back (the later end waits for it, whoever runs it: :mod:`isoplug.logs.chains`);
- the receiver closes (:meth:`PendingEnds.close`); or more than ``max_per_tree`` of the
  sender's tree are pending (the tree's connection places: a process that drops its
  connections in a loop while it lives holds a ledger, a ring and a pidfd per end, and the
  connection limits count only open connections), and the tree's oldest is accounted for at
  once, as before this existed: an outside check's plugin held the host's every pending end
  and ring so, and past the bound in all the oldest of any tree went, another plugin's; or
  more than :data:`MAX_PENDING_ENDS` are pending in all, the last bound (the oldest is
  accounted for at once).

Meanwhile the connection is closed and its accounting pending: its metrics say so
(:attr:`~isoplug.logs.LogMetrics.pending_ends`, set by the replayer that defers its end).

Each end is accounted for exactly once (whoever pops it from the table runs it). The pid is
the kernel's word at the connection, and is checked once more when the end is handed over: a
pid reused meanwhile would only make the accounting wait for that other process, never lose
it (and the bound above applies).
"""

from __future__ import annotations

import os
import select
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from isoplug.log_guard import guarded_logger
from isoplug.transport.process_tree import stat_fields
from isoplug.transport.wake_pipe import WakePipe

__all__ = ["MAX_PENDING_ENDS", "POLL_INTERVAL", "PendingEnds", "process_running"]

#: Ends waiting at once per receiver, past which the oldest is accounted for at once (each
#: sender tree's own are bounded first: see PendingEnds).
MAX_PENDING_ENDS = 256
#: How often the watcher looks at /proc for senders it has no pidfd for (seconds).
POLL_INTERVAL = 0.1

_log = guarded_logger("isoplug.logs")

#: Told the ``resumed_after`` of the connection that takes over (None: the process exited,
#: or the receiver closes), it accounts for the end; or starts to, returning what to await
#: for it (on an event loop, in slices: isoplug.logs.settling).
Finish = Callable[[int | None], Awaitable[None] | None]


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: its descriptors, the ledger's too, are gone)."""
    fields = stat_fields(pid)
    return bool(fields and fields[0] not in (b"Z", b"X", b"x"))


class _Pending:
    __slots__ = ("finish", "order", "pid", "pidfd", "tree")

    def __init__(
        self, pid: int, pidfd: int | None, finish: Finish, order: int, tree: str | None
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.finish = finish
        self.order = order
        self.tree = tree


class PendingEnds:
    """The pending ends of one receiver's connections (see the module docstring): at most
    ``max_per_tree`` of one sender tree (None: no such bound), ``max_pending`` in all."""

    def __init__(
        self, max_pending: int = MAX_PENDING_ENDS, max_per_tree: int | None = None
    ) -> None:
        if max_per_tree is not None and max_per_tree < 1:
            raise ValueError(
                f"a sender tree's pending ends must be bounded by 1 or more, not {max_per_tree!r}"
            )
        self._max_pending = max_pending
        self.max_per_tree = max_per_tree
        self._lock = threading.Lock()
        # Keyed by (pid, chain); chain None: no connection can take over, only an exit ends it.
        self._pending: OrderedDict[tuple[int, object], _Pending] = OrderedDict()
        self._watcher: threading.Thread | None = None
        # Wakes the watcher when the ends it watches change (opened with it).
        self._wake_pipe = WakePipe()
        self._closed = False
        #: Watcher threads that could not be started (the first one is said).
        self._watch_failures = 0

    def __len__(self) -> int:
        return len(self._pending)

    def defer(
        self,
        pid: int,
        chain: int | None,
        finish: Finish,
        *,
        order: int = 0,
        tree: str | None = None,
    ) -> bool:
        """Keep the end of a connection of process ``pid`` (of ``chain``, if it named one;
        ``order``: which connection of it, see :meth:`settle`; ``tree``: the sender tree whose
        ends count together, None: not known) pending; False (nothing kept: account for it
        now) once the process exited, or the receiver is closing. ``finish`` is called
        exactly once, from whichever thread resolves it (see the module docstring)."""
        pidfd = _pidfd(pid)
        if not process_running(pid):
            if pidfd is not None:
                os.close(pidfd)
            return False
        key: tuple[int, object] = (pid, chain if chain is not None else object())
        evicted: list[_Pending] = []
        with self._lock:
            if self._closed:
                if pidfd is not None:
                    os.close(pidfd)
                return False
            earlier = self._pending.pop(key, None)
            if earlier is not None:
                evicted.append(earlier)
            self._pending[key] = _Pending(pid, pidfd, finish, order, tree)
            evicted.extend(self._over_tree_bound(tree))
            while len(self._pending) > self._max_pending:
                evicted.append(self._pending.popitem(last=False)[1])
            if not self._start_watcher():
                # No thread to watch for its exit (a host out of threads or memory): nothing
                # would ever settle it, so it is accounted for now, as after an exit.
                del self._pending[key]
                if pidfd is not None:
                    os.close(pidfd)
                kept = False
            else:
                self._wake()
                kept = True
        for each in evicted:
            self._resolve(each, None)
        return kept

    def _over_tree_bound(self, tree: str | None) -> list[_Pending]:
        """Take out the oldest ends of ``tree`` past its bound (lock held): the tree that
        drops its connections pays for it, not the receiver's other senders. Ends of no
        known tree count only in all."""
        if tree is None or self.max_per_tree is None:
            return []
        # At most max_pending ends to look through, once per deferred end.
        keys = [key for key, each in self._pending.items() if each.tree == tree]
        over = max(0, len(keys) - self.max_per_tree)
        return [self._pending.pop(key) for key in keys[:over]]

    def resume(self, pid: int, chain: int, resumed_after: int) -> Awaitable[None] | None:
        """A connection of ``chain`` of process ``pid`` arrived, resuming after record
        ``resumed_after``: the chain's pending end, if any, is accounted for now (on the
        caller's thread), up to that record; or started, and what its finish returned is
        returned (the new connection's records wait for it)."""
        with self._lock:
            pending = self._pending.pop((pid, chain), None)
            if pending is not None:
                self._wake()
        if pending is not None:
            return self._resolve(pending, resumed_after)
        return None

    def settle(self, pid: int, chain: int, *, before: int) -> Awaitable[None] | None:
        """Account now (on the caller's thread) for the pending end of ``chain`` of process
        ``pid``, if any and of a connection earlier than ``before`` (its ``order``), whole: a
        later connection of the chain is accounted for after the process exited, before the
        watcher saw the exit. Its ring may give back what the later connection's cannot, so
        it goes first; what its finish returned is returned (on an event loop, its task).
        Never a later connection's: that one waits for the caller's end."""
        with self._lock:
            key: tuple[int, object] = (pid, chain)
            pending = self._pending.get(key)
            if pending is not None and pending.order < before:
                del self._pending[key]
                self._wake()
            else:
                pending = None
        if pending is not None:
            return self._resolve(pending, None)
        return None

    def close(self) -> None:
        """Account for every pending end now (the receiver closes); later ones are not kept.

        The watcher thread, if one runs, is woken and ends; it closes the wake pipe on its
        way out (it may be polling it now), else this does. :meth:`wait_closed` waits for it.
        """
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
            watcher = self._watcher
            if watcher is None:
                self._wake_pipe.close()
            else:
                self._wake()
        for each in pending:
            self._resolve(each, None)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """After :meth:`close`, wait up to ``timeout`` for the watcher thread to end (it may be
        accounting for an end it took just before); whether it did, the wake pipe closed
        with it. One that takes longer closes the pipe itself when it ends."""
        with self._lock:
            watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)
        with self._lock:
            return self._watcher is None

    # -- the watcher ---------------------------------------------------------------------------

    def _start_watcher(self) -> bool:
        """Start the watcher thread if it is not running (lock held); False when it could not
        be started (no thread, or no descriptor for its wake pipe), said the first time."""
        if self._watcher is not None:
            return True
        watcher = threading.Thread(target=self._watch, name="isoplug-log-pending-ends", daemon=True)
        try:
            self._wake_pipe.open()
            watcher.start()
        except (RuntimeError, OSError, MemoryError) as error:
            # Kept only once started: close() would join a thread that never ran.
            if self._watch_failures == 0:
                _log.warning(
                    "cannot watch for the exit of log senders that hung up (%s): their records "
                    "are accounted for at once, without waiting for them to reconnect or exit",
                    error,
                )
            self._watch_failures += 1
            return False
        self._watcher = watcher
        return True

    def _wake(self) -> None:
        """Wake the watcher (lock held: the pipe is closed under it)."""
        self._wake_pipe.wake()

    def _watch(self) -> None:
        """Wait for pending senders to exit; ends once nothing is pending (the pipe stays for
        the next watcher, unless the receiver closed)."""
        while True:
            with self._lock:
                if not self._pending:
                    self._watcher = None
                    if self._closed:
                        # close() left the pipe to us: we may have been polling it.
                        self._wake_pipe.close()
                    return
                pending = list(self._pending.items())
            poller = select.poll()
            poller.register(self._wake_pipe.read_end, select.POLLIN)
            unwatched = False
            for _, each in pending:
                # Read once: another thread resolving it sets it to None meanwhile.
                pidfd = each.pidfd
                if pidfd is not None:
                    poller.register(pidfd, select.POLLIN)
                else:
                    unwatched = True
            poller.poll(POLL_INTERVAL * 1000 if unwatched else None)
            self._wake_pipe.drain()
            for key, each in pending:
                if not self._exited(each):
                    continue
                with self._lock:
                    if self._pending.get(key) is not each:
                        continue  # resolved meanwhile by another thread
                    del self._pending[key]
                self._resolve(each, None)

    @staticmethod
    def _exited(pending: _Pending) -> bool:
        """Whether its process exited; a false yes (its pidfd closed by whoever resolved it
        meanwhile) is caught by the table, which no longer holds it."""
        pidfd = pending.pidfd
        if pidfd is not None:
            ready = select.poll()
            ready.register(pidfd, select.POLLIN)
            return bool(ready.poll(0))
        return not process_running(pending.pid)

    @staticmethod
    def _resolve(pending: _Pending, resumed_after: int | None) -> Awaitable[None] | None:
        if pending.pidfd is not None:
            os.close(pending.pidfd)
            pending.pidfd = None
        try:
            return pending.finish(resumed_after)
        except Exception:
            # The end's own reports are guarded (handler errors are counted there); this is
            # a bug of ours, said with its traceback rather than lost with the watcher.
            _log.exception("accounting for an ended log connection failed")
            return None


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``; None where the kernel or Python has none (then /proc is polled)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd
