"""A :class:`~isoplug.Host` started in a process that is PID 1 (a container started without
an init): said once, with the fix.

The kernel re-parents every orphan of a PID namespace to its PID 1, which must ``wait()`` for
it, or its corpse (a zombie) stays in the process table for as long as PID 1 runs. The host
reaps the processes it starts and ends what a runner leaves behind, but it cannot wait for
every child of the process it lives in (``waitpid(-1)`` would steal the exit statuses of the
application's own children): the orphans that a plugin's children make (``sh -c "cmd &"``, a
daemon's double fork) pile up as zombies. ``isoplug run`` forks a reaper when it is PID 1
(:mod:`isoplug.cli.init_process`): its host runs in the child, never PID 1, and does not warn.
"""

from __future__ import annotations

import os
import threading

from isoplug.log_guard import guarded_logger

__all__ = ["warn_if_pid1"]

_log = guarded_logger("isoplug.host")
_said = threading.Event()


def warn_if_pid1() -> None:
    """One WARNING per process, when it is PID 1 (see the module docstring)."""
    if os.getpid() != 1 or _said.is_set():
        return
    _said.set()
    _log.warning(
        "this process is PID 1 (a container started without an init): the orphans of the "
        "plugins' children are re-parented to it and nothing waits for them, so they stay "
        "zombies in the process table for as long as it runs; start it under an init that "
        'reaps them: `docker run --init`, tini (ENTRYPOINT ["tini", "--", ...]), or, '
        "without an application of your own, `isoplug run`, which reaps as PID 1"
    )
