"""One loop, one process: the event loop and the process a :class:`~isoplug.Host` belongs to.

A host's runners, sockets, tasks and futures live on the event loop that started it, in the
process that started it. Used from anywhere else, it cannot work: from another loop its
futures belong to the wrong loop (asyncio's bare "attached to a different loop", or a hang);
after its loop closed, nothing runs its tasks any more; in a forked child, its sockets, zygote
and runners are shared with the parent, and what the child sends or closes would reach the
parent's. :class:`HostBinding` tells, before anything is sent, why a host cannot be used here,
naming the fix.

The check that matters per call is one comparison (``asyncio.get_running_loop() is
binding.loop``): a closed loop cannot be the running one, and a forked child's bindings have
no loop (:func:`_after_fork_in_child`). The rest runs only when that comparison fails.

A forked child also closes, at once, its copies of what keeps the parent's runners and zygote
going (:func:`release_in_forked_child`): a runner's lifeline (the write end of its stdin), the
read ends of its stdout/stderr, its pidfd; the zygote's socket and lifeline. A child that
lives on (an ``os.fork()``, a ``multiprocessing`` worker forked after the host started) would
otherwise hold them open, and when the host died its runners would never read end-of-file on
their lifeline (:mod:`isoplug.runner.lifeline`), nor a descendant escaped from a runner's
process group get a broken pipe on its output. The child closes its descriptors only, never
tells the other end anything (a shutdown would reach the parent's: the open file is shared).
The loop's epoll instance is the parent's too: an asyncio selector loop gets one of its own,
with the same registrations (:func:`~isoplug.transport.fork_epoll.epoll_of_its_own`), so that
the child's loop, closing, does not unregister the parent's descriptors. A process started with
``subprocess`` inherits none of them: they are not inheritable, and ``close_fds`` is the default.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback
import weakref
from pathlib import Path
from typing import Protocol

from isoplug.errors import UsageError
from isoplug.loop_closed import running_asyncio_loop
from isoplug.transport.fork_epoll import epoll_of_its_own

__all__ = [
    "NO_ASYNCIO_LOOP",
    "OTHER_LOOP_ADVICE",
    "HostBinding",
    "Inherited",
    "release_in_forked_child",
    "require_asyncio",
    "running_asyncio_loop",
]

#: Every binding of a started host in this process: a fork's child marks them foreign.
_bound: weakref.WeakSet[HostBinding] = weakref.WeakSet()
#: What a host used from another event loop advises, unless what runs it knows better.
OTHER_LOOP_ADVICE = (
    "Create and use a Host within one loop: in pytest-asyncio, give the Host's fixture and the "
    "tests using it the same loop scope (`loop_scope=...`); from another thread, hand the work "
    "to the Host's loop with `asyncio.run_coroutine_threadsafe(host.call(...), host_loop)`"
)
#: Why a host cannot run, or be awaited, where no asyncio loop runs (trio, say: asyncio's
#: own error, "no running event loop", names neither asyncio nor the fix).
NO_ASYNCIO_LOOP = (
    "no asyncio event loop is running here. isoplug's Host runs on asyncio (any asyncio loop, "
    "uvloop included), not on trio or another async library's loop. Run it under asyncio: "
    '`asyncio.run(main())`, or with anyio `anyio.run(main, backend="asyncio")`; with anyio\'s '
    "pytest plugin, which runs every `@pytest.mark.anyio` test on every installed backend, "
    'define an `anyio_backend` fixture returning "asyncio" (in conftest.py); from a thread '
    "with no loop, hand the work to the Host's loop with "
    "`asyncio.run_coroutine_threadsafe(host.call(...), host_loop)`"
)
#: Where isoplug's own coroutines are defined (see _disown_tasks).
_PACKAGE_DIR = str(Path(__file__).parent.parent) + os.sep


class Inherited(Protocol):
    """What holds descriptors a forked child must close (see the module docstring)."""

    def drop_inherited(self) -> None:
        """In a forked child: close this process's copies, telling the other end nothing.
        Runs in the child's only thread, right after the fork: it takes no lock (another
        thread of the parent may have held it), and is idempotent."""


#: Every holder of a host's descriptors in this process: a fork's child drops them.
_holders: weakref.WeakSet[Inherited] = weakref.WeakSet()


def release_in_forked_child(holder: Inherited) -> None:
    """Have a forked child of this process call ``holder.drop_inherited()`` right after the
    fork (the holder is referred to weakly: once collected, it holds nothing)."""
    _holders.add(holder)


class HostBinding:
    """The loop and process of one host, from its ``start()`` on."""

    def __init__(self) -> None:
        #: The loop that started the host (None before its start, and in a forked child).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The process that started the host.
        self.pid = os.getpid()
        #: Set in a forked child: the host and all it holds are the parent's.
        self.foreign = False
        self._thread = ""
        #: The thread that started the host (its loop's, as asyncio runs it).
        self.thread_id: int | None = None

    def bind(self) -> None:
        """Tie the host to the running loop, in this process (its ``start()``); raise
        :class:`RuntimeError` naming the fix where no asyncio loop runs."""
        self.loop = require_asyncio("start the host")
        self.pid = os.getpid()
        self._thread = threading.current_thread().name
        self.thread_id = threading.get_ident()
        _bound.add(self)

    def problem(self, other_loop_advice: str | None = None, *, awaited: bool = False) -> str | None:
        """Why the host cannot be used here and now; None when it can (or is not started).
        Used from another loop, it advises ``other_loop_advice`` (by default
        :data:`OTHER_LOOP_ADVICE`); ``awaited`` (a coroutine of the host's) where no asyncio
        loop runs, :data:`NO_ASYNCIO_LOOP`."""
        if self.foreign or self.pid != os.getpid():
            return (
                f"this Host was started in process {self.pid}, and this is process "
                f"{os.getpid()}, a fork of it: a Host's runners, zygote and sockets are its "
                "process's own, and a child must not touch them. Create a new Host in the child "
                "after the fork (with multiprocessing, use the 'spawn' or 'forkserver' start "
                "method, or start the Host after the workers are forked)"
            )
        loop = self.loop
        if loop is None:
            return None
        if loop.is_closed():
            return (
                f"this Host's event loop ({_describe(loop)}) is closed, but the Host was not "
                "closed: it no longer runs, and its plugins' states are unknown. Close a Host "
                "(`async with Host(...)`, or `await host.aclose()`) inside the loop that started "
                "it, before that loop ends (`asyncio.run(...)` ends its loop on return); what it "
                "left is released when it is garbage-collected, or at exit"
            )
        running = running_asyncio_loop()
        if running is None:
            # Plain code outside any loop (a thread, say) may read the host's state; a
            # coroutine awaited there runs on another async library, or none.
            return NO_ASYNCIO_LOOP if awaited else None
        if running is loop:
            return None
        return (
            f"this Host was started on another event loop ({_describe(loop)}, started in thread "
            f"{self._thread!r}) than the one running now ({_describe(running)}); its runners "
            f"and futures belong to that loop. {other_loop_advice or OTHER_LOOP_ADVICE}"
        )

    def check(
        self, what: str, other_loop_advice: str | None = None, *, awaited: bool = False
    ) -> None:
        """Raise :class:`RuntimeError` saying why the host cannot ``what`` here, and how to
        fix it (from another loop: ``other_loop_advice``, if given; ``awaited``: see
        :meth:`problem`); nothing is sent or changed."""
        why = self.problem(other_loop_advice, awaited=awaited)
        if why is not None:
            raise UsageError(f"cannot {what}: {why}")


def require_asyncio(what: str) -> asyncio.AbstractEventLoop:
    """The asyncio loop running in this thread; :class:`RuntimeError` saying that isoplug
    needs one, and how to get one, when none is (``what``: what could not be done)."""
    loop = running_asyncio_loop()
    if loop is None:
        raise UsageError(f"cannot {what}: {NO_ASYNCIO_LOOP}")
    return loop


def _describe(loop: asyncio.AbstractEventLoop) -> str:
    return f"{type(loop).__name__} at {id(loop):#x}"


def _after_fork_in_child() -> None:
    # The fork's child has the bindings' memory, not their loops' threads or the host's
    # processes: every started host here is the parent's.
    loops: set[asyncio.AbstractEventLoop] = set()
    for binding in list(_bound):
        if binding.loop is not None:
            loops.add(binding.loop)
        binding.foreign = True
        binding.loop = None
    for loop in loops:
        # Its copy of the loop (the application's, going on here) must not change the
        # parent's epoll registrations: closing it removed the parent's self-pipe, and the
        # parent's loop never woke for a thread's result again (its host's close hung).
        epoll_of_its_own(loop)
        _disown_tasks(loop)
    for holder in list(_holders):
        try:
            holder.drop_inherited()
        except Exception:
            # One holder that failed must not keep the others' descriptors open. No logging
            # here: a handler's lock may have been held by a thread that is not in the child.
            sys.stderr.write(
                f"isoplug: a forked child could not close its copy of {holder!r}:\n"
                + traceback.format_exc()
            )


def _disown_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Take the host's tasks of ``loop`` (copies of the parent's) out of asyncio's registry.

    A child that forked inside the loop and leaves it (an exception through ``asyncio.run``)
    has asyncio cancel every task it knows of, and run their ``finally`` blocks: for a
    runner's tasks, killing the runner and closing its connection, which are the parent's.
    Unknown to asyncio, they are never resumed here.
    """
    for task in asyncio.all_tasks(loop):
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and code.co_filename.startswith(_PACKAGE_DIR):
            asyncio.tasks._unregister_task(task)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
