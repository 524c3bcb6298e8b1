"""One runner OS process: start it with pipes, watch its exit, signal its process group.

It is spawned (``subprocess.Popen``) or forked by the host's zygote (see
:mod:`isoplug.host.zygote`); :mod:`isoplug.host.children` hides the difference. Either way the
runner is started in a process group of its own (``process_group=0``, or ``setpgid(0, 0)`` in
the zygote's child), so:

- Ctrl-C in the terminal reaches only the host (the terminal's foreground group), which then
  stops runners in order;
- the runner and anything its plugins fork share one process group, which
  :meth:`RunnerProcess.signal_group` signals as a whole: a grandchild that outlives the runner
  is killed with it instead of becoming an orphan that holds the stdout pipe open.

A group is the plugin's to leave (``setpgid``, ``setsid``), so every signal the host sends
(:meth:`RunnerProcess.send`) goes to the runner itself too, through a pidfd where there are
pidfds; after the exit, the descendants it left are found by /proc (see
:mod:`isoplug.host.descendants`), wherever their group.

It stays in the host's session, unlike a new session (``start_new_session=True``, as before):
where the kernel groups tasks by session for scheduling (``sched_autogroup_enabled=1``), every
session is a scheduling group with one share of the CPU, so 32 runners in sessions of their own
took 32 shares against the host's one, and no nice value of theirs changed that. In the host's
session they share its one share, where their lower nice values
(:mod:`isoplug.runner.priority`) leave the host what it needs (measured in
``benchmarks/many_runners.py``, see ``docs/benchmarks.md``). A plugin that opens ``/dev/tty``
now finds the host's terminal as a background process group would.

Exit is watched by a thread blocked on this one pid, independent of the pipes (see
:mod:`isoplug.host.exit_watch`). The stdout/stderr pipes are read by threads too
(:class:`~isoplug.host.stdio.StdioCapture`), never on the event loop.

The runner's stdin stays open after the bootstrap line, for as long as the runner lives: it is
the runner's *lifeline*. It is a socket (:mod:`isoplug.host.runner_stdin`: no other process can
open it through /proc, as it could a pipe) whose other end only the host holds, so the runner
reads end-of-file there the moment the host dies or lets go of it, whatever state the host
died in (see :mod:`isoplug.runner.lifeline`). A fork of the host's process closes its copy at once
(:meth:`RunnerProcess.drop_inherited`, see :mod:`isoplug.host.binding`): a child of the
application that outlives the host must not keep its runners alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from isoplug.control import STOP_NOTICE
from isoplug.host.binding import release_in_forked_child
from isoplug.host.children import Child, SpawnedChild
from isoplug.host.exit_watch import ExitWatch
from isoplug.host.forked_child import ForkedChild
from isoplug.host.leftovers import Leftovers, end_interpreters, end_leftovers
from isoplug.host.pipe_size import GROWN_PIPE_BYTES, enlarge_pipes
from isoplug.host.runner_stdin import runner_stdin
from isoplug.host.stdio import StdioCapture
from isoplug.host.stdio_replay import StdioDestination
from isoplug.host.zygote import Zygote
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop

__all__ = ["PRINTING_PIPE_BYTES", "RunnerProcess", "Unreaped"]

_log = guarded_logger("isoplug.host")

#: The size asked for the stdout/stderr pipes of a runner whose ``print()`` writes to them
#: (``stdio = "pipe"``): the reader thread drains them in slices of GIL time, and a pipe of
#: the default 64 KiB fills within about 2 ms of printing, blocking the plugin until the
#: reader's next turn. The kernel caps it at ``/proc/sys/fs/pipe-max-size`` (1 MiB by default)
#: and at the user's share of pipe memory, hence only for runners that print to them.
PRINTING_PIPE_BYTES = GROWN_PIPE_BYTES

#: After the kill that ends a drain (``SupervisorConfig.stdio_drain_timeout``), how long the
#: killed processes may take to release the pipes. Past this, a process that escaped the group
#: still holds a pipe: stop reading rather than hang.
_KILLED_DRAIN_TIMEOUT = 1.0
#: Once a runner has exited, how long the host waits for its log handlers to replay what the
#: runner sent: the stdout/stderr output that was read (past this, the rest is counted dropped
#: and reported) and the records of its log connections (past this, they go on being
#: replayed, but its end is accounted and a stop returns). A handler that takes seconds per
#: record must not hold a restart or the host's shutdown for hours.
EXIT_REPLAY_TIMEOUT = 5.0

#: After a SIGKILL, how long the runner may take to be gone before it is sent another (and
#: the log says so): a process in uninterruptible sleep dies only when it wakes.
KILL_RETRY = 1.0

OpenStdio = Callable[[int], StdioDestination]
"""``open_stdio(pid)``: where the output of the runner process ``pid`` goes."""


Unreaped = Callable[[], Awaitable[bool]]
"""``unreaped()``: whether a runner that looks alive has in fact exited unseen (see
:meth:`RunnerProcess.kill_and_wait`), once that is dealt with."""


def _signal_label(signum: signal.Signals) -> str:
    """``"SIGKILL"``: a signal the host sends (its own value, not the runner's)."""
    return signal.Signals(signum).name


class RunnerProcess:
    """A started runner. Create with :meth:`start`; always finish with :meth:`close`."""

    def __init__(self, child: Child, exited: asyncio.Future[int], tag: str | None = None) -> None:
        self._child = child
        self.pid = child.pid
        #: Only the process that started the runner signals it (never a fork of it: see
        #: isoplug.host.binding).
        self._owner = os.getpid()
        #: ``"spawn"`` or ``"fork"`` (from the host's zygote: see isoplug.host.zygote).
        self.method = child.method
        self.started = time.monotonic()
        #: ``time.monotonic()`` when its exit was seen (None while it runs): its uptime ends
        #: there, not when the host is done with its output.
        self.ended: float | None = None
        #: Resolves to ``Popen.returncode`` once the runner has exited and been reaped.
        self.exited = exited
        #: The value of ``descendants.TAG_VARIABLE`` in the runner's environment.
        self.tag = tag
        #: The signals the host sent the runner while it ran, and why (the first reason): the
        #: bare cause ("its memory ... passed its limit"), which messages quote after "killed
        #: by SIGKILL from the host: " or beside a reason "killed by the host: <cause>".
        self.host_signals: dict[signal.Signals, str] = {}
        #: After a SIGKILL the host did not send: evidence of the out-of-memory killer, and
        #: which sources were checked (see :class:`~isoplug.host.oom.OomWatch`).
        self.oom: tuple[str | None, tuple[str, ...]] = (None, ())
        #: What the host knows of the exit beyond its status (its zygote had died), or why
        #: the status is unknown; set before ``exited`` resolves.
        self.exit_note = ""
        #: False when ``exited`` holds no status the host could read (see ``exit_note``).
        self.status_known = True
        #: Its zygote's death ended it (a forked runner's; set before ``exited`` resolves).
        self.zygote_died = False
        #: Its CPU time (seconds) at the exit, where the host could read it; set before
        #: ``exited`` resolves.
        self.cpu_at_exit: float | None = None
        self._capture: StdioCapture | None = None
        #: A signal found the runner outside its process group, and the log said so.
        self._outside_group_told = False
        self._exit_watch = ExitWatch(child, self.host_signals)
        release_in_forked_child(self)

    @property
    def seen_descendants(self) -> Mapping[int, int]:
        """Its descendants seen while it lives, pid -> start time (see ExitWatch.recorded)."""
        return self._exit_watch.recorded

    def reading_output(self) -> bool:
        """Whether the host still reads this runner's stdout and stderr pipes."""
        return self._capture is not None and self._capture.reading

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin_line: bytes,
        open_stdio: OpenStdio,
        spawned: Callable[[RunnerProcess], None] | None = None,
        tag: str | None = None,
        pass_fds: Sequence[int] = (),
        zygote: Zygote | None = None,
        pipe_bytes: int | None = None,
    ) -> RunnerProcess:
        """Spawn ``argv``, write ``stdin_line`` on its stdin (kept open: the runner's lifeline),
        capture stdio. ``tag`` is the value of ``descendants.TAG_VARIABLE`` in ``env``;
        ``pass_fds`` the descriptors it inherits (its health channel).

        ``spawned`` is told of the process as soon as it exists, before it can read its stdin:
        whatever it connects to may then already know its pid. ``open_stdio(pid)`` says where
        its stdout/stderr output goes (read and replayed by threads, see
        :class:`~isoplug.host.stdio.StdioCapture`). With a ``zygote``, the runner is forked by
        it instead of spawned (``argv`` is then what it would have run), unless it cannot
        serve. ``pipe_bytes``: the size to ask for the stdout/stderr pipes (None: the kernel's
        default). If starting fails after the spawn, the
        process is killed before the error is raised. Raises :class:`OSError` when the process
        cannot be started.
        """
        loop = asyncio.get_running_loop()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        if pipe_bytes is not None:
            enlarge_pipes((out_write, err_write), pipe_bytes)
        try:
            child: Child | None = None
            if zygote is not None:
                child = await _fork(zygote, env, out_write, err_write, pass_fds)
            if child is None:
                child = _spawn(argv, env, out_write, err_write, pass_fds)
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            # The runner has its copies; ours would keep the pipes open after it exits.
            os.close(out_write)
            os.close(err_write)
        exited: asyncio.Future[int] = loop.create_future()
        process = cls(child, exited, tag)
        threading.Thread(
            target=process._wait_in_thread,
            args=(loop,),
            name=f"isoplug-wait-{child.pid}",
            daemon=True,
        ).start()
        owned = [out_read, err_read]  # until the capture owns them
        try:
            if spawned is not None:
                spawned(process)
            capture = StdioCapture(
                child.pid,
                {"stdout": out_read, "stderr": err_read},
                open_stdio(child.pid),
                loop=loop,
            )
            owned = []
            process._capture = capture
            capture.start()
            # A bootstrap is small, but a forked runner's environment may not fit the socket's
            # buffer: the write blocks until the runner reads, so keep it off the loop.
            await off_loop(process._write_stdin, child.stdin_preamble + stdin_line)
        except BaseException:
            # Cancelled, or the pipes could not be read: the process must not outlive this
            # (the capture, if started, ends by itself once the killed process's pipes close).
            process.kill("the host's start of it failed or was cancelled")
            if process._capture is not None:
                process._capture.seal()
            child.close_stdin()
            for fd in owned:
                os.close(fd)
            raise
        return process

    def _write_stdin(self, line: bytes) -> None:
        try:
            self._child.write_stdin(line)
        except BrokenPipeError:
            _log.debug("runner %d exited before reading its bootstrap", self.pid)
            self._let_go()

    def tell_stopping(self, notice: bytes = STOP_NOTICE) -> bool:
        """Tell the runner that the host began stopping it, before the host asks it
        (:data:`~isoplug.control.STOP_NOTICE`: an outside SIGTERM from then on changes
        nothing), or that the host's SIGTERM comes next
        (:data:`~isoplug.control.TERMINATE_NOTICE`: that one ends it at once); see
        :mod:`isoplug.runner.outside_stop`. Never blocks; returns whether it was written. A
        runner that cannot be told (gone, or its stdin full) takes the host's SIGTERM for one
        coming during its stop, and the host's SIGKILL follows as ever."""
        if os.getpid() != self._owner:
            return False
        return self._child.tell_stopping(notice)

    def _let_go(self) -> None:
        """Close the runner's lifeline: from now on it ends by itself (if it still runs)."""
        self._child.close_stdin()

    def drop_inherited(self) -> None:
        """In a forked child of the host: close the child's copies of the runner's lifeline,
        pidfd and output pipes, so that they end when the host's do (see
        :mod:`isoplug.host.binding`)."""
        self._child.drop_inherited()
        if self._capture is not None:
            self._capture.drop_inherited()

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        facts = self._exit_watch.wait()
        self.exit_note = facts.note
        self.cpu_at_exit = facts.cpu
        self.status_known = facts.known
        self.oom = facts.oom
        self.zygote_died = facts.zygote_died
        self.ended = facts.seen_at
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._set_exited, facts.returncode)

    def _set_exited(self, returncode: int) -> None:
        if not self.exited.done():
            self.exited.set_result(returncode)

    @property
    def running(self) -> bool:
        return not self.exited.done()

    @property
    def uptime(self) -> float:
        """Seconds from its start to its exit (to now while it runs)."""
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def end_capture_without_loop(self) -> None:
        """Let the stdout/stderr threads end without the supervision that would have sealed
        them (its loop closed under the host): what was read is still replayed."""
        if self._capture is not None:
            self._capture.stop_reading()
            self._capture.seal()

    def kill(self, why: str) -> None:
        """SIGKILL the runner and its process group, noting ``why`` for the exit account."""
        self.send(signal.SIGKILL, why)

    async def kill_and_wait(self, why: str, name: str, unreaped: Unreaped | None = None) -> None:
        """:meth:`kill`, then wait for the exit, sending SIGKILL again (and saying so) every
        :data:`KILL_RETRY` seconds for as long as the runner is still there. ``unreaped()``
        (a forked runner's) says whether it has exited, unseen: a zombie its zygote did not
        reap, which a SIGKILL cannot reach (it then has the zygote see to it)."""
        self.kill(why)
        killed = time.monotonic()
        while not await self.wait_exit(KILL_RETRY):
            if unreaped is not None and await unreaped():
                return
            _log.error(
                "runner %s (pid %d) still runs %.1f s after SIGKILL; sending it again",
                name,
                self.pid,
                time.monotonic() - killed,
            )
            self.kill(why)

    def send(self, signum: signal.Signals, why: str) -> None:
        """Send ``signum`` to the runner and to its process group, noting ``why`` for the exit
        account if the runner still runs (the first reason stays: it is the one that took
        effect).

        The runner itself is signalled through a pidfd where there are pidfds (never a process
        that reused its pid): a plugin may have moved it out of its group (``setpgid``,
        ``setsid``). (A runner is in its group from the moment the host has its pid: Popen
        sets it before the exec, and the zygote before it replies.)
        Whatever could not be signalled is logged.
        """
        if os.getpid() != self._owner:
            return
        running = self.running
        if running:
            self.host_signals.setdefault(signum, why)
        sent = _signal_label(signum)
        try:
            reached = self._child.send_signal(signum)
        except OSError as exc:
            reached = False
            if running:
                _log.error(
                    "could not send %s to runner pid %d (%s): %s",
                    sent,
                    self.pid,
                    why,
                    exc,
                )
        grouped = self.signal_group(signum)
        if reached and not grouped and self.running and not self._outside_group_told:
            self._outside_group_told = True
            _log.warning(
                "runner pid %d is not in its own process group (a plugin left it with setpgid "
                "or setsid): %s was sent to it alone; what its "
                "plugins started is ended after it exits",
                self.pid,
                sent,
            )

    def signal_group(self, signum: signal.Signals) -> bool:
        """Send ``signum`` to the runner's process group; False when nobody was left in it.

        Safe after the runner was reaped: the kernel does not reuse a process-group id while
        any member of the group is alive, so this reaches only the runner's descendants.
        """
        if os.getpid() != self._owner:
            return False
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            # A descendant switched user: it is beyond our reach, and outside our pipes' life.
            _log.warning("not allowed to signal process group %d", self.pid)
            return False
        return True

    async def wait_exit(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for the exit; True if it has exited. A cancel point."""
        if self.exited.done():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.exited)
        return self.exited.done()

    async def close(
        self,
        drain_timeout: float,
        replay_timeout: float = EXIT_REPLAY_TIMEOUT,
        inherited: Mapping[int, int] | None = None,
    ) -> Leftovers:
        """After the exit: finish reading stdio, kill leftover descendants, release the pipes.

        Output still in the pipes, and whatever processes the plugins forked write to them, is
        read until both pipes end or ``drain_timeout`` passes; then the runner's process group
        and every descendant that left it are killed (the returned leftovers say whether they
        held the pipes: the caller reports it all in one line). Then waits up to
        ``replay_timeout`` for what was read to be replayed; the rest is counted dropped and
        reported. Returns the processes that outlived the runner and had to be killed.
        ``inherited``: the processes its ready report said its interpreter command started
        (None without a report); what is left of them is killed first, without waiting for the
        pipes (they would only hold them open): see :mod:`isoplug.host.leftovers`.
        Always releases everything; never blocks the event loop.
        """
        capture = self._capture
        leftovers = Leftovers(self.pid, inherited)
        self._let_go()
        try:
            await end_interpreters(leftovers, self.tag, self._exit_watch.recorded)
            if capture is not None and not await capture.wait_read(drain_timeout):
                # Said once, with the rest of what outlived the runner (the supervisor's
                # account of its leftovers, on isoplug.host).
                leftovers.held_output = drain_timeout
                await self._end_leftovers(leftovers)
                if not await capture.wait_read(_KILLED_DRAIN_TIMEOUT):
                    capture.stop_reading()
                    leftovers.output_lost = True
            await self._end_leftovers(leftovers)
            if capture is not None:
                capture.stop_reading()
                await capture.wait_read(_KILLED_DRAIN_TIMEOUT)
                capture.seal()
                if not await capture.wait_replayed(replay_timeout):
                    _log.warning(
                        "runner %d: the host's log handlers had not replayed its stdout/stderr "
                        "output %g s after it was read; dropping the rest (counted and reported)",
                        self.pid,
                        replay_timeout,
                    )
                    # Counted before stop() returns, so its metrics hold them: the replay
                    # thread only ends the batch in hand first.
                    capture.abandon()
                    await capture.wait_replayed(_KILLED_DRAIN_TIMEOUT)
        finally:
            if capture is not None:
                # No-ops once done; on a cancel, they make sure the threads end.
                capture.stop_reading()
                capture.seal()
                if not capture.replayed:
                    capture.abandon()
            if not self._child.finished():
                self._child.kill()
        return leftovers

    async def _end_leftovers(self, leftovers: Leftovers) -> None:
        await end_leftovers(leftovers, self.tag, self._exit_watch.recorded, self.signal_group)


async def _fork(
    zygote: Zygote, env: Mapping[str, str], stdout: int, stderr: int, inherit: Sequence[int]
) -> ForkedChild | None:
    """Have ``zygote`` fork the runner; None when it cannot (then it is spawned)."""
    runner_end, host_end = runner_stdin()
    try:
        child = await zygote.fork(env, (runner_end, host_end), stdout, stderr, inherit)
    except BaseException:
        host_end.close()
        raise
    finally:
        os.close(runner_end)  # the runner has its copy
    if child is None:
        host_end.close()
    return child


def _spawn(
    argv: Sequence[str], env: Mapping[str, str], stdout: int, stderr: int, inherit: Sequence[int]
) -> SpawnedChild:
    runner_end, host_end = runner_stdin()
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=runner_end,
            stdout=stdout,
            stderr=stderr,
            env=dict(env),
            # A group of its own in the host's session, not a session of its own: see the
            # module docstring.
            process_group=0,
            close_fds=True,
            pass_fds=tuple(inherit),
        )
    except BaseException:
        host_end.close()
        raise
    finally:
        os.close(runner_end)  # the runner has its copy
    return SpawnedChild(popen, host_end)
