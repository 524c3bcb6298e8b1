"""Forks a child inside a method, as plugin code may: the child inherits the runner's running
event loop (and its epoll instance, shared with the runner) and its sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import sys

import isoplug

log = logging.getLogger("loopforker")


async def _child_work(tag: str) -> None:
    await asyncio.sleep(0)
    log.warning("child %s ran its own loop", tag)


def _unregister_everything() -> None:
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target != "anon_inode:[eventpoll]":
            continue
        epoll = select.epoll.fromfd(os.dup(int(name)))
        with epoll:
            for fd in range(256):
                with contextlib.suppress(OSError):
                    epoll.unregister(fd)


class LoopForker(isoplug.Plugin):
    @isoplug.method
    async def ping(self, value: int) -> int:
        log.info("pong %d", value)
        return value

    @isoplug.method
    async def fork(self, how: str) -> int:
        """Fork; the child does ``how`` and ends (or, for ``sys-exit`` and ``return``, comes
        back into the runner's dispatch). Returns the child's exit code."""
        pid = os.fork()
        if pid == 0:
            self._in_child(how)
            return -1  # the child's answer, which must never reach the host
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        return os.waitstatus_to_exitcode(status)

    @isoplug.method
    def fork_in_thread(self, how: str) -> int:
        """:meth:`fork` from a plain ``def`` method, which runs in a worker thread: the child's
        only thread is that one."""
        pid = os.fork()
        if pid == 0:
            self._in_child(how)
            return -1
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def _in_child(self, how: str) -> None:
        try:
            if how == "asyncio-run":
                asyncio.run(_child_work(how))
            elif how == "new-loop":
                loop = asyncio.new_event_loop()
                loop.run_until_complete(_child_work(how))
                loop.close()
            elif how == "unregister-all":
                # What a child's copy of the runner's loop does as it closes: it unregisters
                # every descriptor from the epoll instance it inherited.
                _unregister_everything()
            elif how == "sys-exit":
                sys.exit(0)
            elif how == "return":
                return
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                raise
            print(f"child {how} failed: {exc!r}", file=sys.stderr, flush=True)
            os._exit(3)
        if how not in ("sys-exit", "return"):
            os._exit(0)
