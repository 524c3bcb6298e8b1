"""Zygotes shared by the hosts of one process, where sharing is on (:func:`share_zygotes`).

A host starts its zygote on its first runner start (:mod:`isoplug.host.zygote`): importing
Python and the runner stack there is about 250 ms of a host's first ready runner, against
25-35 ms for each fork after it. A test suite starts a host per test, and pays it each time.
With sharing on, hosts whose runners get the same environment use one zygote, kept after
they close, for the next host; it ends with the process. The pytest plugin of
:mod:`isoplug.testing` turns sharing on for test sessions (through
:mod:`isoplug.zygote_sharing`, the switch, which it can import without the host); it is off
otherwise, so that an application's host leaves no process behind when it closes.

What changes with sharing, and why it is safe where it is on:

- A zygote's parent-death signal is tied to the thread that started it. A shared zygote is
  started from a thread of this module that lives as long as the process, so that it does not
  die with the first host's thread (a :class:`~isoplug.testing.BlockingHarness` runs each host
  on a thread of its own). A host's forked runners then die with the process, not with the
  thread of a host that was never closed; a closed host stops its runners itself.
- No runner's token or environment passes through a zygote (each goes on the runner's
  stdin), so runners of two hosts forked by one zygote share nothing they would not share
  with different zygotes.
- A shared zygote that dies is replaced for the next host, as a host's own zygote is; so is
  one whose site-packages changed since it started (:mod:`isoplug.host.site_stamps`): it is
  retired, and ends with the last runner it forked once no host uses it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import queue
import threading
from collections.abc import Mapping

from isoplug.host.zygote_process import ZygoteProcess
from isoplug.zygote_sharing import share_zygotes, sharing, when_turned_off

__all__ = ["release", "retire", "share_zygotes", "sharing", "take"]

#: Zygotes no host uses kept for the next host, the most recently used: a suite whose tests
#: give runners different environments (a ``HOME`` of each test's own) would otherwise keep
#: a zygote per test until its end.
MAX_IDLE = 2

_EnvironmentKey = tuple[tuple[str, str], ...]
_StartOrder = tuple[dict[str, str], concurrent.futures.Future[ZygoteProcess]]


class _SharedZygotes:
    """The shared zygotes of this process, by their environment, and how many hosts use
    each."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every zygote (in a forked child: they are the parent's)."""
        self.lock = threading.Lock()
        self.zygotes: dict[_EnvironmentKey, ZygoteProcess] = {}
        self.users: dict[ZygoteProcess, int] = {}
        #: What the thread that starts the shared zygotes is asked (see the module
        #: docstring), and that thread, once started.
        self.starts: queue.SimpleQueue[_StartOrder] = queue.SimpleQueue()
        self.starter: threading.Thread | None = None

    def forget(self, process: ZygoteProcess) -> None:
        """Under ``lock``: ``process`` serves no host any more."""
        self.users.pop(process, None)
        for key, value in list(self.zygotes.items()):
            if value is process:
                del self.zygotes[key]

    def start(self, environment: dict[str, str]) -> ZygoteProcess:
        future: concurrent.futures.Future[ZygoteProcess] = concurrent.futures.Future()
        with self.lock:
            if self.starter is None or not self.starter.is_alive():
                self.starter = threading.Thread(
                    target=self._serve_starts, name="isoplug-zygote-starter", daemon=True
                )
                self.starter.start()
        self.starts.put((environment, future))
        return future.result()

    def _serve_starts(self) -> None:
        while True:
            environment, future = self.starts.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(ZygoteProcess.start(environment))
            except BaseException as exc:  # handed to the host that asked, which reports it
                future.set_exception(exc)


_shared = _SharedZygotes()


def _let_idle_ones_go() -> None:
    """Sharing was turned off: the shared zygotes no host uses end."""
    with _shared.lock:
        idle = [z for z, users in _shared.users.items() if not users]
        for process in idle:
            _shared.forget(process)
    for process in idle:
        process.close()


when_turned_off(_let_idle_ones_go)


def take(environment: Mapping[str, str]) -> ZygoteProcess:
    """The shared zygote for runners of ``environment``, started if there is none alive,
    counted as used until :func:`release`. Raises :class:`OSError` as
    :meth:`ZygoteProcess.start` does."""
    key = tuple(sorted(environment.items()))
    outdated = None
    with _shared.lock:
        process = _shared.zygotes.pop(key, None)
        if process is not None and process.ended is None and process.outdated() is None:
            _shared.zygotes[key] = process  # the most recently used last
            _shared.users[process] += 1
            return process
        if process is not None and process.ended is None:
            # Popped: no host gets it any more; the hosts using it retire it when done.
            if not _shared.users.get(process):
                _shared.users.pop(process, None)
                outdated = process
        elif process is not None:
            _shared.forget(process)
    if outdated is not None:
        outdated.retire()
    process = _shared.start(dict(environment))
    duplicate = None
    with _shared.lock:
        current = _shared.zygotes.get(key)
        if current is not None and current.ended is None:
            # Another thread's host started one meanwhile: use that one.
            _shared.users[current] += 1
            duplicate, process = process, current
        else:
            _shared.zygotes[key] = process
            _shared.users[process] = 1
    if duplicate is not None:
        duplicate.close()
    return process


def release(process: ZygoteProcess) -> None:
    """A host is done with the shared ``process``: it is kept for the next host while sharing
    is on (the :data:`MAX_IDLE` most recently used of those no host uses), and let go
    otherwise once no host uses it."""
    with _shared.lock:
        users = _shared.users.get(process)
        if users is None:
            return  # replaced since (it died), or let go at the process's end
        _shared.users[process] = users - 1
        if users == 1 and process not in _shared.zygotes.values():
            # Out of date, replaced for the next hosts: this was the last host using it.
            del _shared.users[process]
            retiring = True
        else:
            retiring = False
        idle = [z for z in _shared.zygotes.values() if not _shared.users.get(z)]
        close = idle[: max(0, len(idle) - MAX_IDLE)] if sharing() else idle
        for stale in close:
            _shared.forget(stale)
    if retiring:
        process.retire()
    for stale in close:
        stale.close()


def retire(process: ZygoteProcess) -> None:
    """A host is done with the shared ``process`` because it is out of date (its
    site-packages changed): no host gets it any more, and once none uses it, it ends with the
    last runner it forked."""
    with _shared.lock:
        for key, value in list(_shared.zygotes.items()):
            if value is process:
                del _shared.zygotes[key]
    release(process)


@atexit.register
def _close_all() -> None:
    """At the process's end: let every shared zygote go (each exits at once, as it would
    on the end of its lifeline when the process is gone)."""
    with _shared.lock:
        processes = list(_shared.users)
        _shared.zygotes.clear()
        _shared.users.clear()
    for process in processes:
        process.close()


def _after_fork_in_child() -> None:
    # The child's copies of the parent's zygotes are closed by their drop_inherited (see
    # isoplug.host.binding); the child's own hosts start their own, from a thread of its own.
    _shared.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
