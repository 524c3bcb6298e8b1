"""Closes the runner's log socket (and ledger) the way a daemonizing plugin or an fd-cleanup
loop does, behind the forwarding handler's back, then logs; or every descriptor above 2, with
``os.closerange()`` or below Python (libc's ``close()`` through ctypes), in a method or in
``setup()`` (``FDCLOSER_IN_SETUP``: ``closerange`` or ``libc``); or aborts itself on a failed C
assertion, or outlives a child's."""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import select
import signal
import socket
import subprocess
import sys
from typing import Any

import isoplug
from isoplug.logs import ForwardingHandler, reconnect
from isoplug.runner.vital_fds import vital

log = logging.getLogger("fdcloser")


def _handler() -> ForwardingHandler:
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler)]
    return handler


def _close_log_descriptors(ledger: bool) -> list[int]:
    """Close the log connection's socket (and its memfd ledger): the numbers, lowest first."""
    handler = _handler()
    handler.flush(5)
    assert handler._sock is not None
    numbers = [handler._sock.fileno()]
    if ledger and handler._shared_ledger is not None:
        numbers.append(handler._shared_ledger.fd)
    for fd in numbers:
        os.close(fd)
    return sorted(numbers)


def _log_numbered(count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        log.info("numbered %d", index, extra={"n": index})


def _close_every_descriptor(how: str) -> None:
    """Close every descriptor from 3 to 1023, as a daemonizing helper does: with
    ``os.closerange()``, or with libc's ``close()``, which no Python code sees."""
    if how == "closerange":
        os.closerange(3, 1024)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for fd in range(3, 1024):
        libc.close(fd)


class FdCloser(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        how = os.environ.get("FDCLOSER_IN_SETUP")
        if how:
            _close_every_descriptor(how)
            log.info("setup closed every descriptor above 2")

    @isoplug.method
    def close_everything(self, how: str) -> int:
        """In a worker thread; logs after it, and returns the runner's pid."""
        _close_every_descriptor(how)
        log.info("closed every descriptor above 2 with %s", how)
        return os.getpid()

    @isoplug.method
    async def close_everything_on_the_loop(self, how: str) -> int:
        _close_every_descriptor(how)
        log.info("closed every descriptor above 2 with %s on the loop", how)
        return os.getpid()

    @isoplug.method
    def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    def replace_the_loops_poller(self) -> int:
        """Put an epoll of the plugin's own over the number of the loop's (same device and
        inode as every epoll), as a library reusing descriptors could: the loop's number."""
        poller = next(
            fd
            for what, fd in vital.kept(0, 1 << 20)
            if what == "its event loop's" and "eventpoll" in os.readlink(f"/proc/self/fd/{fd}")
        )
        own = select.epoll()
        os.dup2(own.fileno(), poller)
        log.info("put an epoll of its own over %d", poller)
        return poller

    @isoplug.method
    def close_one_of_the_runners(self) -> list[Any]:
        """os.close() of a descriptor the runner cannot work without: its number, and what
        the close raised (errno, text), or "closed"."""
        ((_, fd), *_) = vital.kept(0, 1 << 20)
        try:
            os.close(fd)
        except OSError as exc:
            return [fd, exc.errno, exc.strerror]
        return [fd, "closed"]

    @isoplug.method
    def fail_a_c_assertion(self, faulthandler_on: bool = True) -> None:
        """What a C extension's failed assert() does: glibc says so on stderr, and aborts.
        Without faulthandler (as when the runner exits for closed descriptors and uvloop
        aborts meanwhile), no dump follows the assertion's words."""
        if not faulthandler_on:
            faulthandler.disable()
        libc = ctypes.CDLL(None)
        assert_fail = getattr(libc, "__assert_fail")  # a class would mangle the name
        assert_fail(b"descriptors_intact", b"native.c", 42, b"check_descriptors")

    @isoplug.method
    def outlive_a_childs_assertion(self, faulthandler_on: bool = True) -> None:
        """Run a child that aborts on a failed C assertion, its words on the runner's stderr
        (inherited), then say more there: the runner went on after them."""
        assertion = "import ctypes; ctypes.CDLL(None).__assert_fail(b'ok', b'child.c', 7, b'f')"
        subprocess.run([sys.executable, "-c", assertion], check=False)
        if not faulthandler_on:
            faulthandler.disable()
        os.write(2, b"fdcloser: its helper crashed; serving on\n")

    @isoplug.method
    async def close_then_log(self, count: int, ledger: bool = False) -> None:
        _close_log_descriptors(ledger)
        _log_numbered(count)

    @isoplug.method
    async def reuse_then_log(self, count: int, path: str) -> dict[str, Any]:
        """Close the log socket and its ledger, let a socket pair and a file of the plugin's
        take their numbers, log; what reached the plugin's socket and file."""
        freed = _close_log_descriptors(ledger=True)
        mine, peer = socket.socketpair()
        file = open(path, "wb")  # noqa: SIM115 (closed below, after the records)
        taken = sorted([mine.fileno(), peer.fileno(), file.fileno()])
        _log_numbered(count)
        _handler().flush(5)
        peer.setblocking(False)
        try:
            foreign = len(peer.recv(65536))
        except BlockingIOError:
            foreign = 0
        mine.sendall(b"still mine")
        echoed = peer.recv(100)
        file.write(b"mine")
        file.close()
        mine.close()
        peer.close()
        return {"reused": set(freed) <= set(taken), "foreign": foreign, "echoed": echoed.decode()}

    @isoplug.method
    async def close_log_then_exit(self, count: int) -> None:
        """Close the log socket, log, wait for the reconnection, log more, and die at once."""
        _close_log_descriptors(ledger=False)
        _log_numbered(count)
        _handler().start(5)
        _log_numbered(count, start=count)
        os._exit(3)

    @isoplug.method
    async def close_log_then_die(self, count: int) -> None:
        """Close the log socket, log, and be killed before the sender thread reconnects:
        its first attempt waits a minute (the delays are the module's to set, see
        isoplug.logs.reconnect), so the records are in the old connection's ring alone."""
        reconnect.RECONNECT_DELAYS = (60.0,)
        _close_log_descriptors(ledger=False)
        _log_numbered(count)
        os.kill(os.getpid(), signal.SIGKILL)
