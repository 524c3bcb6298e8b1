"""Waiting for one runner process's exit, in a thread of its own.

The thread blocks on this one pid (``waitpid``, or the zygote's report for a forked runner), so
a grandchild holding the stdout pipe open cannot hide the runner's exit. Where the kernel has
pidfds, it first polls one, recording the runner's process tree every second until the exit:
after it, the descendants the runner left are found by that record even when they left its
process group (see :mod:`isoplug.host.descendants`). After an exit by a SIGKILL the host did
not send, it gathers the evidence of the kernel's out-of-memory killer
(:class:`~isoplug.host.oom.OomWatch`).
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import time

from isoplug.host import descendants
from isoplug.host.children import Child
from isoplug.host.oom import OomWatch
from isoplug.host.shortage import shortage
from isoplug.log_guard import guarded_logger

__all__ = ["RECORD_INTERVAL", "ExitFacts", "ExitWatch"]

_log = guarded_logger("isoplug.host")

#: How often the runner's process tree is recorded while it lives.
RECORD_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class ExitFacts:
    """What the host knows of a runner's exit."""

    #: ``Popen.returncode``: the exit code, or minus the signal.
    returncode: int
    #: What the host knows beyond the status (its zygote had died), or why it is unknown.
    note: str
    #: False when ``returncode`` is no status the host could read (see ``note``).
    known: bool
    #: Its CPU time (seconds) at the exit, where the host could read it.
    cpu: float | None
    #: After a SIGKILL the host did not send: the out-of-memory killer's evidence, and which
    #: sources were checked.
    oom: tuple[str | None, tuple[str, ...]]
    #: Its zygote's death ended it (see :class:`~isoplug.host.children.ExitStatus`).
    zygote_died: bool = False
    #: ``time.monotonic()`` when the exit was seen: the end of its uptime, whatever the host
    #: does after (waiting for the output a child of it holds open).
    seen_at: float = dataclasses.field(default_factory=time.monotonic)


class ExitWatch:
    """The exit of ``child``; ``host_signals`` are the signals the host sent it (noted before
    they are sent), read to tell the host's SIGKILL from the kernel's."""

    def __init__(self, child: Child, host_signals: dict[signal.Signals, str]) -> None:
        self._child = child
        self._host_signals = host_signals
        #: The runner's descendants seen while it lived (pid -> start time); only the waiting
        #: thread writes it, and only until the exit is known.
        self.recorded: dict[int, int] = {}

    def wait(self) -> ExitFacts:
        """Block until the runner has exited and been reaped (in a thread: never the loop)."""
        pid = self._child.pid
        watch: OomWatch | None = None
        try:
            watch = OomWatch(pid)
            self._record_until_exit()
        except Exception as error:
            # Whatever failed here, the exit must still be waited for and told.
            short = shortage(error)
            if short is not None:
                _log.warning("runner %d: not watching its process tree: %s", pid, short)
            else:
                _log.exception("runner %d: watching its process tree failed (an isoplug bug)", pid)
        status = self._child.wait()
        seen_at = time.monotonic()
        oom: tuple[str | None, tuple[str, ...]] = (None, ())
        try:
            # The host notes its signals before it sends them: a SIGKILL not noted is not its.
            if (
                status.known
                and status.returncode == -signal.SIGKILL
                and signal.SIGKILL not in self._host_signals
                and watch is not None
            ):
                oom = watch.evidence()
        except Exception:
            _log.exception("runner %d: looking for out-of-memory evidence failed", pid)
        finally:
            if watch is not None:
                watch.close()
        return ExitFacts(
            status.returncode,
            status.note,
            status.known,
            status.cpu,
            oom,
            status.zygote_died,
            seen_at,
        )

    def _record_until_exit(self) -> None:
        """Record the runner's process tree every :data:`RECORD_INTERVAL` until it exits
        (returns at once where there are no pidfds: the descendants are then found without)."""
        pidfd = self._child.open_pidfd()
        if pidfd is None:
            return
        pid = self._child.pid
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll(RECORD_INTERVAL * 1000):
                tree = descendants.subtree(pid)
                recorded = self.recorded
                if len(recorded) + len(tree) > descendants.MAX_RECORDED:
                    # Forget the ones that are gone (their start time no longer matches).
                    recorded = {
                        pid: start
                        for pid, start in recorded.items()
                        if (stat := descendants.read_stat(pid)) and stat.start == start
                    }
                recorded.update(list(tree.items())[: descendants.MAX_RECORDED - len(recorded)])
                self.recorded = recorded
        finally:
            os.close(pidfd)
