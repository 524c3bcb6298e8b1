"""A runner ends within moments of its host's death, whatever its plugins are doing.

Two mechanisms, because neither covers every case alone:

- **Parent-death signal** (Linux): ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel kill
  the runner when the thread that started it ends. The host starts runners from its event
  loop's thread, which lives as long as the host's loop does (a runner cannot outlive a host
  whose loop has ended anyway). A runner forked by the host's zygote
  (:mod:`isoplug.runner.zygote`) has the zygote for parent, which has the same signal tied to
  the host's loop thread: the chain ends whole. It needs nothing of the runner: it works while
  a plugin holds the GIL in native code, where no Python thread can run. The parent is checked
  right after the setting, for a host that died before it.
- **Lifeline** (everywhere): the host keeps the write end of the runner's stdin open for the
  runner's whole life. A thread here sleeps in ``read()`` on it (no GIL held, no event loop
  needed) and wakes at end of file, which the kernel makes happen when the host dies, however
  it died, or when the host lets go of the runner. It then kills the runner's process group:
  the runner and what its plugins started there. It needs the GIL only for those few steps,
  which a busy worker thread or a blocked event loop hands over within the interpreter's
  switch interval. Only the host may hold that write end: a process its application forks
  closes its copy at once (:mod:`isoplug.host.binding`), and one it spawns never has one (the
  descriptor is not inheritable).

Nothing else comes on it after the bootstrap, except one notice that the host began stopping
the runner (:mod:`isoplug.runner.outside_stop`), which this thread passes on.

The lifeline is moved off descriptor 0 (``/dev/null`` takes its place), so that plugins and the
processes they start neither read nor inherit it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading

from isoplug.control import TERMINATE_NOTICE
from isoplug.runner.outside_stop import host_stops
from isoplug.thread_limits import start_thread
from isoplug.transport.fd_identity import FdIdentity

__all__ = ["hold_lifeline", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


def hold_lifeline(fd: int = 0) -> None:
    """Arm both mechanisms; ``fd`` is the runner's stdin, the bootstrap line already read."""
    parent = os.getppid()
    set_parent_death_signal()
    if os.getppid() != parent:
        os._exit(1)  # the host died before the signal was armed
    lifeline = os.dup(fd)  # not inheritable (Python's default)
    identity = FdIdentity(lifeline)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, fd)
    os.close(null)
    watch = threading.Thread(
        target=_watch, args=(lifeline, identity), name="isoplug-lifeline", daemon=True
    )
    start_thread(watch, "the runner's lifeline, which ends it with its host")


def set_parent_death_signal() -> None:
    """SIGKILL this process when the thread that started it ends (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _watch(lifeline: int, identity: FdIdentity) -> None:
    while True:
        try:
            notices = os.read(lifeline, 4096)
            if not notices:
                break
        except InterruptedError:
            continue
        except OSError:
            break
        # The host writes here after the bootstrap only to say that it began stopping this
        # runner, and that its SIGTERM comes next (see isoplug.runner.outside_stop).
        host_stops(terminating=TERMINATE_NOTICE in notices)
        if not identity.holds():
            # A plugin closed the number (os.closerange(3, ...)) while the read held the
            # socket: read again, it would fail (and kill a runner its host is stopping) or
            # take the data of a file of the plugin's under the number. Its parent-death
            # signal still ends it with its host, and its stop with its connection's end.
            return
    # The host is gone or let go of this runner: nobody supervises it any more. Its process
    # group goes with it (this process included).
    with contextlib.suppress(OSError):
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(1)
