"""A short-lived process the host runs to ask one question, ended with everything it started.

The host runs a few: the check of a plugin's own interpreter
(:mod:`isoplug.host.interpreter_check`) and the check of a configuration against a plugin's
schema (:mod:`isoplug.host.config_check`). Each runs code the host does not control (a
wrapper script, a plugin's import), which may start processes of its own that inherit the
helper's pipes and outlive it. So:

- The helper leads a session and process group of its own, and its environment carries a
  tag its descendants inherit (:data:`~isoplug.host.descendants.TAG_VARIABLE`). Ending it
  kills the whole group at once, then whatever still carries the tag, sits in its session or
  was seen in its process tree (:mod:`isoplug.host.descendants`): at the caller's deadline, on
  a cancel, or once it has exited on its own (what it left behind goes with it).
- Its process tree is recorded while it runs (often at first, since most helpers answer
  within a second, then every second) and once more right before the group kill, while
  the helper still holds its children: that is what finds a child that both left the session
  (``setsid``) and dropped its environment (``env -i``). A child that did both and lost its
  link to the helper (a double fork, or the helper's exit) before it was ever seen is beyond
  reach, as for runners.
- Its exit is seen through a pidfd (a thread's ``waitid`` where there is none), never through
  its pipes. On Python 3.11, asyncio's ``Process.wait()`` returns only once every pipe is
  closed: a background process the helper started (a wrapper's ``sleep 300 &``) held them
  and the wait, even after a cancel, never ended.
- Its output is read as it comes (:attr:`stdout`, :attr:`stderr`), so a caller can take an
  answer line as the answer whoever keeps the pipe open after it. Once it has exited,
  everything it wrote is in its pipes: what is left there is read at once and the readers
  end, so a process it started that still holds a pipe (outside its group, ended with the
  rest of what it left) cannot hold a caller reading to the end until its deadline.
- Its stdin is a socket (:mod:`isoplug.host.runner_stdin`, as a runner's is): the question
  (a plugin's configuration) can be read only by the helper, never opened by another process
  through ``/proc/<helper>/fd/0``, as a file or a pipe could be. A thread of its own writes
  it, so a question larger than the socket's buffer waits for the helper's read, never the
  loop; the helper reads it to the end of the stream, which the thread's close makes.

Ending kills synchronously first, so a second cancel during the awaits that follow cannot
leave anything running; the leader is reaped by a loop callback that no one needs to await.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO

from isoplug.host.descendants import (
    MAX_RECORDED,
    TAG_LENGTH,
    TAG_VARIABLE,
    end_processes,
    find_descendants,
    read_stat,
    subtree,
)
from isoplug.host.runner_stdin import HostEnd, runner_stdin
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop

__all__ = ["HelperProcess"]

_log = guarded_logger("isoplug.host")

#: How long ending waits for a SIGKILLed helper to be gone: a moment, unless the kernel holds
#: it (uninterruptible I/O); then the host goes on, and the helper is reaped when it goes.
_END_WAIT = 5.0
#: Bytes a pipe's reader buffers before it stops reading (the helper then waits to write).
_READ_LIMIT = 64 * 1024
#: What is read of a pipe at once when the helper has exited: more than a pipe holds (the
#: helper's output, all there by then), less than a process it left could write meanwhile.
_DRAIN_LIMIT = 2 * 1024 * 1024
#: When its process tree is first recorded; each interval after doubles, up to the last.
_FIRST_RECORD = 0.05
_RECORD_EVERY = 1.0

#: Endings under way: a task is only weakly held by the loop.
_ending: set[asyncio.Task[None]] = set()


class HelperProcess:
    """One helper process; see the module's docstring. Start it with :meth:`start`, and always
    :meth:`close` it (in a ``finally``)."""

    def __init__(self, popen: subprocess.Popen[bytes], tag: str) -> None:
        self._popen = popen
        self._tag = tag
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._transports: list[tuple[asyncio.ReadTransport, asyncio.StreamReader, int]] = []
        self._end: asyncio.Task[None] | None = None
        #: Its descendants seen while it ran (pid -> start time): see the module's docstring.
        self._recorded: dict[int, int] = {}
        self._recording: asyncio.TimerHandle | None = None
        self.stdout = asyncio.StreamReader(_READ_LIMIT)
        #: None unless started with ``stderr=True`` (its stderr is then /dev/null or a file).
        self.stderr: asyncio.StreamReader | None = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status (negative: the signal that killed it) once it has exited."""
        return self._exited.result() if self._exited.done() else None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        question: bytes,
        *,
        stderr: bool | IO[bytes],
    ) -> HelperProcess:
        """Start ``argv`` with ``env`` (plus a tag), ``question`` on its stdin; its stderr read
        (True, :attr:`stderr`), dropped (False) or written to a file. Raises :class:`OSError`
        when it cannot be started."""
        env = dict(env)
        tag = env[TAG_VARIABLE] = secrets.token_hex(TAG_LENGTH // 2)
        helper_stdin, asking = runner_stdin()
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=helper_stdin,
                stdout=subprocess.PIPE,
                stderr=(
                    stderr
                    if not isinstance(stderr, bool)
                    else subprocess.PIPE
                    if stderr
                    else subprocess.DEVNULL
                ),
                env=env,
                start_new_session=True,
            )
        except BaseException:
            asking.close()
            raise
        finally:
            os.close(helper_stdin)
        threading.Thread(
            target=_ask, args=(asking, question), name=f"isoplug-ask-{popen.pid}", daemon=True
        ).start()
        helper = cls(popen, tag)
        try:
            helper._watch_exit()
            helper._schedule_record(_FIRST_RECORD)
            assert popen.stdout is not None
            await helper._connect(helper.stdout, popen.stdout)
            if popen.stderr is not None:
                helper.stderr = asyncio.StreamReader(_READ_LIMIT)
                await helper._connect(helper.stderr, popen.stderr)
            if helper._exited.done():
                helper._finish_reading()  # it exited while its pipes were being connected
        except BaseException:
            await helper.close()
            raise
        return helper

    async def _connect(self, reader: asyncio.StreamReader, pipe: IO[bytes]) -> None:
        transport, _ = await self._loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        self._transports.append((transport, reader, pipe.fileno()))

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # a kernel without pidfds (before Linux 5.3)
            threading.Thread(
                target=self._wait_in_thread, name=f"isoplug-helper-{self.pid}", daemon=True
            ).start()
        else:
            self._loop.add_reader(pidfd, self._on_exit, pidfd)

    def _wait_in_thread(self) -> None:
        # WNOWAIT: the pid stays the helper's (a zombie) until _on_exit has killed its group.
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits any more
            self._loop.call_soon_threadsafe(self._on_exit, None)

    def _on_exit(self, pidfd: int | None) -> None:
        if pidfd is not None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
        # The leader is a zombie until reaped: its pid still names its group, and only it.
        self._kill_group()
        self._popen.wait()  # it has exited: this only reaps it
        if not self._exited.done():
            self._exited.set_result(self._popen.returncode)
        self._finish_reading()
        # What left its group goes too: it may hold the pipes a caller reads to their end.
        self._start_end()

    def _finish_reading(self) -> None:
        """Reads what it left in its pipes, then ends its readers: it has exited, so all it
        wrote is there; what a process it left writes later is not its answer."""
        for transport, reader, fd in self._transports:
            if transport.is_closing():
                continue  # at its end already (or closed): the reader has everything
            left = _DRAIN_LIMIT
            with contextlib.suppress(BlockingIOError, InterruptedError):
                # Non-blocking since connect_read_pipe: this stops where the pipe is empty.
                while left > 0 and (chunk := os.read(fd, min(left, _READ_LIMIT))):
                    reader.feed_data(chunk)
                    left -= len(chunk)
            # Its connection_lost ends the reader (EOF) after what was fed, and closes the pipe.
            transport.close()

    def _schedule_record(self, delay: float) -> None:
        self._recording = self._loop.call_later(delay, self._record_tick, delay)

    def _record_tick(self, delay: float) -> None:
        self._record()
        if not self._exited.done() and self._end is None:
            self._schedule_record(min(delay * 2, _RECORD_EVERY))

    def _record(self) -> None:
        """Adds its process tree as it is now to the record. In the loop, not a thread, so that
        the walk right before the group kill sees the tree the kill meets: a helper's tree is a
        few processes, and the walk reads only their own /proc entries."""
        if self._exited.done():
            return  # reaped: its pid may name another process by now
        tree = subtree(self.pid)
        recorded = self._recorded
        if len(recorded) + len(tree) > MAX_RECORDED:
            # Forget the ones that are gone (their start time no longer matches).
            recorded = {
                pid: start
                for pid, start in recorded.items()
                if (stat := read_stat(pid)) and stat.start == start
            }
        recorded.update(list(tree.items())[: MAX_RECORDED - len(recorded)])
        self._recorded = recorded

    def _kill_group(self) -> None:
        if self._exited.done():
            return  # reaped: its pid may name another group by now
        # Its children still hang below it: once it is killed they are init's, and a child
        # that left the session and dropped the tag is found only by this record.
        self._record()
        # A session leader cannot leave its group: the group's id is the helper's pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        """Its exit status, once it has exited; whoever holds its pipes does not matter."""
        return await asyncio.shield(self._exited)

    async def end(self) -> None:
        """Kill it and everything it started that can be found (its group at once, then what
        left the group but has its tag or session, or was seen in its tree) and wait until it is
        gone. Safe to call more than once."""
        self._kill_group()
        ending = self._start_end()
        # Shielded: a cancel of the caller does not cut short the ending itself.
        await asyncio.shield(ending)

    def _start_end(self) -> asyncio.Task[None]:
        if self._recording is not None:
            self._recording.cancel()
        if self._end is None:
            self._end = self._loop.create_task(self._finish())
            _ending.add(self._end)
            self._end.add_done_callback(_ending.discard)
        return self._end

    async def _finish(self) -> None:
        try:
            async with asyncio.timeout(_END_WAIT):
                await asyncio.shield(self._exited)
        except TimeoutError:
            _log.warning(
                "helper process %d did not end within %g s of SIGKILL; going on without it",
                self.pid,
                _END_WAIT,
            )
        leftovers = await off_loop(find_descendants, self.pid, self._tag, dict(self._recorded))
        if leftovers:
            await off_loop(end_processes, leftovers)

    async def close(self) -> None:
        """:meth:`end`, then close this side of its pipes."""
        try:
            await self.end()
        finally:
            for transport, _, _ in self._transports:
                transport.close()


def _ask(stdin: HostEnd, question: bytes) -> None:
    """Write ``question`` on a helper's stdin, then close it (the end of its question). A
    daemon thread: once the host is gone, nobody needs the answer."""
    try:
        stdin.write(question)
    except OSError as exc:
        # It exited, or was ended, before reading all of it: its exit status and stderr,
        # which the caller reports, say why; this is only what it missed.
        _log.debug("a helper process did not read its question: %s", exc)
    finally:
        stdin.close()
