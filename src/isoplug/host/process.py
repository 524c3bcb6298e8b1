"""One runner OS process: spawn with pipes, watch its exit, signal its process group.

The runner is started in a new session (``start_new_session=True``), so:

- Ctrl-C in the terminal reaches only the host, which then stops runners in order;
- the runner and anything its plugins fork share one process group, which
  :meth:`RunnerProcess.signal_group` signals as a whole: a grandchild that outlives the runner
  is killed with it instead of becoming an orphan that holds the stdout pipe open.

Exit is watched by a thread blocked in ``waitpid`` for this one pid, independent of the pipes:
a grandchild holding stdout open cannot hide the runner's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from isoplug.host.stdio import StdioPump

__all__ = ["RunnerProcess"]

_log = logging.getLogger("isoplug.host")

#: After the runner exited, how long its stdout/stderr may take to reach end of stream
#: (the kernel has the last lines buffered; they arrive within milliseconds). Past this, a
#: process that escaped the group still holds a pipe: stop reading rather than hang.
STDIO_DRAIN_TIMEOUT = 2.0

Emit = Callable[[str, int, str, bool], None]
"""``emit(stream, level, text, truncated)`` for one captured record."""


class RunnerProcess:
    """A started runner. Create with :meth:`start`; always finish with :meth:`close`."""

    def __init__(self, popen: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.started = time.monotonic()
        #: Resolves to ``Popen.returncode`` once the runner has exited and been reaped.
        self.exited = exited
        self._pumps: list[StdioPump] = []
        self._transports: list[asyncio.ReadTransport] = []

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin_line: bytes,
        emit: Emit,
        spawned: Callable[[RunnerProcess], None] | None = None,
    ) -> RunnerProcess:
        """Spawn ``argv``, write ``stdin_line`` on its stdin and close it, capture stdio.

        ``spawned`` is told of the process as soon as it exists, before it can read its stdin:
        whatever it connects to may then already know its pid. If starting fails after that,
        the process is killed before the error is raised. Raises :class:`OSError` when the
        process cannot be started.
        """
        loop = asyncio.get_running_loop()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
        exited: asyncio.Future[int] = loop.create_future()
        process = cls(popen, exited)
        threading.Thread(
            target=process._wait_in_thread,
            args=(loop,),
            name=f"isoplug-wait-{popen.pid}",
            daemon=True,
        ).start()
        try:
            if spawned is not None:
                spawned(process)
            assert popen.stdout is not None
            assert popen.stderr is not None
            for stream, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
                pump = StdioPump(stream, functools.partial(emit, stream))
                transport, _ = await loop.connect_read_pipe(functools.partial(_same, pump), pipe)
                process._pumps.append(pump)
                process._transports.append(transport)
            # A bootstrap is small, but a write to a pipe can block: keep it off the loop.
            await asyncio.to_thread(process._write_stdin, stdin_line)
        except BaseException:
            # Cancelled, or the pipes could not be watched: the process must not outlive this.
            process.signal_group(signal.SIGKILL)
            for leftover in (popen.stdin, popen.stdout, popen.stderr):
                if leftover is not None:
                    leftover.close()
            for transport in process._transports:
                transport.close()
            raise
        return process

    def _write_stdin(self, line: bytes) -> None:
        assert self._popen.stdin is not None
        try:
            self._popen.stdin.write(line)
            self._popen.stdin.flush()
        except BrokenPipeError:
            _log.debug("runner %d exited before reading its bootstrap", self.pid)
        finally:
            with contextlib.suppress(BrokenPipeError):
                self._popen.stdin.close()

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        returncode = self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._set_exited, returncode)

    def _set_exited(self, returncode: int) -> None:
        if not self.exited.done():
            self.exited.set_result(returncode)

    @property
    def running(self) -> bool:
        return not self.exited.done()

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def signal_group(self, signum: signal.Signals) -> bool:
        """Send ``signum`` to the runner's process group; False when nobody was left in it.

        Safe after the runner was reaped: the kernel does not reuse a process-group id while
        any member of the group is alive, so this reaches only the runner's descendants.
        """
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

    async def stop(
        self,
        ask: Callable[[], Awaitable[None]] | None,
        *,
        shutdown_timeout: float,
        terminate_timeout: float,
        name: str,
    ) -> None:
        """Stop the runner: ``ask()`` it (if given) and wait ``shutdown_timeout``; then SIGTERM
        its group and wait ``terminate_timeout``; then SIGKILL. Returns once it has exited."""
        if ask is not None and self.running:
            await ask()
            if await self.wait_exit(shutdown_timeout):
                return
            _log.warning(
                "runner %s (pid %d) did not exit within %g s of the shutdown request; "
                "sending SIGTERM",
                name,
                self.pid,
                shutdown_timeout,
            )
        self.signal_group(signal.SIGTERM)
        if await self.wait_exit(terminate_timeout):
            return
        _log.warning(
            "runner %s (pid %d) ignored SIGTERM for %g s; sending SIGKILL",
            name,
            self.pid,
            terminate_timeout,
        )
        self.signal_group(signal.SIGKILL)
        await self.wait_exit(None)

    async def close(self, drain_timeout: float = STDIO_DRAIN_TIMEOUT) -> bool:
        """After the exit: kill leftover descendants, finish reading stdio, release the pipes.

        Returns True when processes of the runner's group were still alive (a plugin forked a
        child that outlived the runner) and had to be killed. Always releases everything.
        """
        leftovers = self.signal_group(signal.SIGKILL)
        try:
            waits = [asyncio.ensure_future(p.closed.wait()) for p in self._pumps]
            _, pending = await asyncio.wait(waits, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                _log.warning(
                    "runner %d: stdout/stderr still open %g s after it exited (a descendant "
                    "left its process group?); stopped reading them",
                    self.pid,
                    drain_timeout,
                )
        finally:
            for transport in self._transports:
                transport.close()
            # Popen keeps its own file objects: the transports closed the same descriptors.
            if self._popen.poll() is None:
                self._popen.kill()
        return leftovers


def _same(pump: StdioPump) -> StdioPump:
    return pump
