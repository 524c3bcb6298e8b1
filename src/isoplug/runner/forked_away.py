"""A process the plugin's own code forks inside a runner (``os.fork()`` in a method): what it
inherits of the runner must not reach the runner's host or loop.

The child inherits the runner's event loop, whose epoll instance is shared with the runner (an
epoll registration belongs to the instance, not to the process): had the child's copy of the
loop run, closed or unregistered anything, it would have taken the runner's registrations, or
its events. And it inherits the runner's connection to the host: had the child answered a call
(a method that returned, or raised ``SystemExit``, in the child), the host would have taken
that answer for the runner's, and the child could read the host's next request.

So, in the child, right after the fork (:func:`_after_fork_in_child`):

- every epoll instance it inherited is replaced, under the same descriptor number, by a new
  empty one: the child's loop, if it ever runs again, touches only its own;
- the runner's own connections (to the host, and the health link) are replaced by a socket
  already shut down: what the child writes there fails in the child, and it reads nothing.

The child's own ``asyncio.run()`` or new loop works as in any process, and its log records reach
the host over a connection of its own, attributed to a descendant of the runner
(:mod:`isoplug.logs.handler`). A child that returns into the runner's call dispatch (it did
not end itself with ``os._exit``) is ended there, saying so (:func:`end_if_forked`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from isoplug.log_guard import guarded_logger
from isoplug.logs.kept_forwarder import let_forwarding_close
from isoplug.runner import outside_stop
from isoplug.transport.fork_epoll import empty_epolls, open_epolls

__all__ = ["arm", "end_if_forked", "runner_pid"]

#: The runner's pid once armed; 0 before (the zygote, which forks runners, is never armed).
_armed = [0]
#: The runner's own descriptors the child must not use: its connection to the host, and the
#: health link.
_runner_fds: list[int] = []
#: The epoll instances open when the runner forks: the child's are made anew, not those the
#: other at-fork hooks may open in the child.
_epolls_at_fork: list[int] = []


def arm(fds: list[int]) -> None:
    """In the runner, once connected to the host: guard the children its plugins fork;
    ``fds`` are the runner's own connections (see the module docstring)."""
    _armed[0] = os.getpid()
    _runner_fds[:] = fds


def runner_pid() -> int:
    """The pid of the runner (0 where no runner is armed)."""
    return _armed[0]


def _before_fork() -> None:
    if _armed[0] and os.getpid() == _armed[0]:
        _epolls_at_fork[:] = open_epolls()


def _after_fork_in_child() -> None:
    if not _armed[0] or os.getpid() == _armed[0]:
        return
    # The child does not touch a runner's epoll or connection however it goes on.
    empty_epolls(_epolls_at_fork)
    # Nor stops the runner's copy on a SIGTERM, as the runner itself would stop.
    outside_stop.forget_in_forked_child()
    if _runner_fds:
        dead, other = socket.socketpair()
        dead.shutdown(socket.SHUT_RDWR)
        other.close()
        try:
            for fd in _runner_fds:
                try:
                    os.dup2(dead.fileno(), fd, inheritable=False)
                except OSError:
                    continue  # not open any more in the runner either
        finally:
            dead.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def end_if_forked(method: str, outcome: BaseException | None) -> None:
    """In a child the plugin forked that came back into the runner's dispatch (the method
    returned, or raised, in the child too): end the child, saying so. Else nothing."""
    if not _armed[0] or os.getpid() == _armed[0]:
        return
    code = 0
    if isinstance(outcome, SystemExit):
        code = outcome.code if isinstance(outcome.code, int) else 1
    elif outcome is not None:
        code = 1
    guarded_logger("isoplug.runner").error(
        "process %d, forked by plugin code in %s, came back into its runner (pid %d)%s: "
        "ended with exit code %d; a forked child must end itself (os._exit)",
        os.getpid(),
        method,
        _armed[0],
        f" raising {type(outcome).__name__}" if outcome is not None else "",
        code,
    )
    let_forwarding_close()
    try:
        logging.shutdown()
        sys.stderr.flush()
    finally:
        os._exit(code)
