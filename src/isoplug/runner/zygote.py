"""``python -m isoplug.runner.zygote FD``: a template process that forks runners on request.

Importing Python, asyncio, msgspec and isoplug's runner stack is most of what starting a runner
costs (about 100 ms and 11 MiB of private memory each). The zygote does it once per host, then
forks a runner for each :class:`~isoplug.control.zygote.ForkOrder` the host sends on the
socket ``FD`` (see :mod:`isoplug.host.zygote` for the host's side). The child then runs exactly what
``python -m isoplug.runner`` runs (:func:`isoplug.runner.__main__.main`), from the same state a
spawned runner would reach: its own process group, its own descriptors on 0, 1, 2 (and the health
socket's number), its environment, the host's working directory, umask and resource limits.

Fork safety, because a fork copies the whole process:

- The zygote runs **no threads** and **no event loop**: one ``poll()`` on its socket, its
  lifeline and a pidfd per child. It checks it has a single thread before serving.
- **Nothing of one runner's own** passes through it: a runner's environment and tokens reach
  the runner on its stdin (its environment, then the bootstrap line the host writes there as
  for a spawned runner), never here, so no runner's memory, a copy of the zygote's, holds
  another's.
- **Random state**: Python reseeds :mod:`random` in a forked child; :mod:`secrets` reads the
  kernel's generator on every call; OpenSSL (loaded with the TLS transport) reseeds itself in
  a process whose pid changed (1.1.1 and later, which Python 3.11 requires). What children
  share is the string hash seed (``PYTHONHASHSEED``) and the address-space layout: see
  docs/design.md.
- The imported objects are moved out of the garbage collector's sight (``gc.freeze()``), so
  that a collection in a runner does not write to, and so copy, the pages they share.

The zygote dies with its host (parent-death signal, and end-of-file on its stdin, which only
the host holds); each runner it forks dies with the zygote (the runner's own parent-death
signal), so a runner never outlives its host, whatever state the host died in. The end of the
host's orders on its socket (the host replaced it by a newer zygote) ends it once its last
runner has exited.

It ignores SIGTERM, SIGINT and SIGHUP while it serves: the host ends it itself, and a signal
meant to stop the whole service (systemd's default ``KillMode=control-group`` sends SIGTERM
to every process of the service at once) must not kill it, and every runner it forked with
it, before the host has stopped them in order. Each child takes back the dispositions the
zygote started with (those a spawned runner has) before any runner code runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import msgspec

from isoplug.control import EXIT_BAD_BOOTSTRAP
from isoplug.control.zygote import ChildExited, Forked, ForkOrder, ForkRefused

# The runner stack, imported once here: this import is what every fork saves.
from isoplug.runner import __main__ as runner_main
from isoplug.runner.forked_start import (
    adopt_environment,
    take_host_settings,
    unfreeze_when_looked_at,
)
from isoplug.runner.lifeline import set_parent_death_signal
from isoplug.runner.loader import drop_working_directory

# Runners run on uvloop when it is installed (isoplug.runner.eventloop): import it once here.
# Not installed: they run on asyncio, imported above.
with contextlib.suppress(ImportError):
    import uvloop  # noqa: F401

__all__ = ["main"]

#: A fork order is a few hundred bytes, its working directory the most of them.
MAX_ORDER_BYTES = 16 * 1024
#: Descriptors an order may bring: stdin, stdout, stderr and a few inherited ones.
_MAX_FDS = 8
#: The zygote's lifeline from its host: end-of-file here means the host is gone.
_LIFELINE = 0


#: Signals meant to stop a process, which the zygote leaves to its host (see the docstring).
_IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: A signal's disposition, as ``signal.signal()`` returns it.
_Disposition = Callable[[int, FrameType | None], Any] | int | None


class _Child:
    """What a forked child takes out of the serving loop."""

    def __init__(
        self,
        order: ForkOrder,
        fds: list[int],
        zygote: int,
        dispositions: dict[signal.Signals, _Disposition],
    ) -> None:
        self.order = order
        self.fds = fds
        #: The zygote's pid: the child's parent, unless it died already.
        self.zygote = zygote
        #: What the zygote started with for the signals it ignores while it serves.
        self.dispositions = dispositions


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("isoplug zygote: started by hand? (expects the host's socket)", file=sys.stderr)
        return 2
    parent = os.getppid()
    set_parent_death_signal()
    if os.getppid() != parent:
        return 1  # the host died before the signal was armed
    if len(os.listdir("/proc/self/task")) != 1:
        # Forking a process with threads copies locks in whatever state they were: refuse.
        print("isoplug zygote: a thread runs in the zygote; not forking", file=sys.stderr)
        return 3
    dispositions = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _IGNORED}
    # Closed when serving ends, rather than left to the collector at the exit, which says so
    # under PYTHONDEVMODE on the host's stderr; a child has detached it already.
    with socket.socket(fileno=int(argv[1])) as sock:
        child = _serve(sock, dispositions)
    if child is None:
        return 0
    return _become_runner(child)


def _serve(sock: socket.socket, dispositions: dict[signal.Signals, _Disposition]) -> _Child | None:
    """Fork on every order until the host lets go (None); in a child, return its order.
    ``dispositions``: what the zygote started with for the signals it ignores, for a child to
    take back."""
    server = _Server(sock, dispositions)
    # Everything imported so far stays untouched by collections in the children.
    gc.collect()
    gc.freeze()
    while True:
        for fd, _events in server.poller.poll():
            if fd == _LIFELINE:
                if not os.read(_LIFELINE, 4096):
                    return None  # the host is gone or let go: the children go with us
            elif fd == sock.fileno():
                try:
                    data, fds, flags, _address = socket.recv_fds(sock, MAX_ORDER_BYTES, _MAX_FDS)
                except OSError:
                    return None
                if not data:
                    # The host's orders ended: it replaced this zygote by a newer one (its
                    # site-packages changed), or let go of it (its lifeline says so too).
                    # Its runners live on until they exit, told to the host as before.
                    if not server.children:
                        return None
                    server.poller.unregister(sock)
                    server.retiring = True
                    continue
                child = server.fork(data, fds, flags)
                if child is not None:
                    sock.detach()  # the child closes the descriptor itself, by number
                    return child
            else:
                server.reap(fd)
                if server.retiring and not server.children:
                    return None


class _Server:
    """The zygote's state: its socket, its children's pidfds, one ``poll()`` over them all."""

    def __init__(
        self, sock: socket.socket, dispositions: dict[signal.Signals, _Disposition]
    ) -> None:
        self.sock = sock
        self.dispositions = dispositions
        self.orders = msgspec.msgpack.Decoder(ForkOrder)
        self.encode = msgspec.msgpack.Encoder().encode
        self.children: dict[int, int] = {}  # pidfd -> pid
        #: No more orders come: it ends with its last child.
        self.retiring = False
        self.pid = os.getpid()
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.poller.register(_LIFELINE, select.POLLIN)

    def fork(self, data: bytes, fds: list[int], flags: int) -> _Child | None:
        """Fork for one order; the child's order in the child, None in the zygote."""
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("the order or its descriptors were cut short")
            order = self.orders.decode(data)
            if len(fds) != 3 + len(order.inherit):
                raise ValueError(f"{len(fds)} descriptors for {3 + len(order.inherit)} numbers")
            sys.stdout.flush()  # nothing buffered may be written twice
            sys.stderr.flush()
            pid = os.fork()
        except (ValueError, msgspec.DecodeError, OSError) as exc:
            for fd in fds:
                os.close(fd)
            self.send(ForkRefused(f"{type(exc).__name__}: {exc}"))
            return None
        if pid == 0:
            return _Child(order, fds, self.pid, self.dispositions)
        for fd in fds:
            os.close(fd)
        # The child makes its group too, but only once it runs: from here on (the host learns
        # of it from the reply below) it is in it, and a signal to its group reaches it.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        # Opened before the child can be reaped (only this loop reaps): it names this child.
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        self.send(Forked(pid), [pidfd])
        return None

    def reap(self, pidfd: int) -> None:
        pid = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        _pid, status, usage = os.wait4(pid, 0)
        os.close(pidfd)
        cpu = usage.ru_utime + usage.ru_stime
        self.send(ChildExited(pid, os.waitstatus_to_exitcode(status), cpu))

    def send(
        self, message: ChildExited | Forked | ForkRefused, fds: list[int] | None = None
    ) -> None:
        # Failing only once the host is gone: the lifeline says so too, and ends the loop.
        with contextlib.suppress(OSError):
            socket.send_fds(self.sock, [self.encode(message)], fds or [])


def _become_runner(child: _Child) -> int:
    """In the forked child: take the runner's descriptors, process group, the host's umask and
    limits, its environment (from its stdin: see isoplug.runner.forked_start), then run what
    ``python -m isoplug.runner`` runs."""
    order = child.order
    # At once, not only once the bootstrap is read (the runner arms it again then): a child
    # must not outlive a zygote that dies in between.
    set_parent_death_signal()
    if os.getppid() != child.zygote:
        os._exit(1)
    # A spawned runner's: a SIGTERM ends it (or starts its stop: isoplug.runner.outside_stop)
    # again, and one ignored by the host stays ignored, as exec would have kept it.
    for signum, disposition in child.dispositions.items():
        if disposition is not None:  # None: not Python's to give back (none at a start)
            signal.signal(signum, disposition)
    _start_process_group()
    _place_descriptors(child.fds, [0, 1, 2, *order.inherit])
    take_host_settings(order.umask, order.rlimits)
    if not adopt_environment():
        return EXIT_BAD_BOOTSTRAP
    unfreeze_when_looked_at()
    try:
        os.chdir(order.cwd)
    except OSError as exc:
        # A spawned runner would inherit the host's directory even if it were removed.
        print(f"isoplug runner: cannot enter the host's working directory: {exc}", file=sys.stderr)
    sys.argv = [runner_main.__file__ or "isoplug.runner"]
    # A record's relativeCreated counts from the process's start, not the zygote's.
    started = logging._startTime  # type: ignore[attr-defined]
    logging._startTime = time.time_ns() if isinstance(started, int) else time.time()  # type: ignore[attr-defined]
    return runner_main.main()


def _start_process_group() -> None:
    """The runner's process group: as ``Popen(process_group=0)`` sets it for a spawned runner
    (isoplug.host.process relies on the group id being the runner's pid for group signals).
    Not a session of its own: runners stay in the host's session, so that they share its one
    scheduling group under ``sched_autogroup`` (see isoplug.host.process)."""
    os.setpgid(0, 0)


def _place_descriptors(fds: list[int], targets: list[int]) -> None:
    """Put ``fds[i]`` on descriptor number ``targets[i]``, inheritable; close every other
    descriptor (the zygote's socket, lifeline and pidfds among them), as ``close_fds`` does."""
    above = max(targets) + 1
    # First out of the way of every target number, then onto them.
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target, inheritable=True)
    keep = sorted(set(targets))
    low = 0
    for number in keep:
        if number > low:
            os.closerange(low, number)
        low = number + 1
    with contextlib.suppress(OSError):
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))


if __name__ == "__main__":
    drop_working_directory()
    sys.exit(main(sys.argv))
