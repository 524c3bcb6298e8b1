"""One runner OS process: spawn with pipes, watch its exit, signal its process group.

The runner is started in a new session (``start_new_session=True``), so:

- Ctrl-C in the terminal reaches only the host, which then stops runners in order;
- the runner and anything its plugins fork share one process group, which
  :meth:`RunnerProcess.signal_group` signals as a whole: a grandchild that outlives the runner
  is killed with it instead of becoming an orphan that holds the stdout pipe open.

Exit is watched by a thread blocked in ``waitpid`` for this one pid, independent of the pipes:
a grandchild holding stdout open cannot hide the runner's exit. The stdout/stderr pipes are read
by threads too (:class:`~isoplug.host.stdio.StdioCapture`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from isoplug.host.stdio import StdioCapture
from isoplug.host.stdio_replay import StdioDestination

__all__ = ["RunnerProcess"]

_log = logging.getLogger("isoplug.host")

#: After the runner exited, how long its stdout/stderr may take to reach end of stream
#: (the kernel has the last lines buffered; they arrive within milliseconds). Until then,
#: processes its plugins forked may still write to the pipes they inherited and are read; past
#: this, the runner's process group is killed.
STDIO_DRAIN_TIMEOUT = 2.0
#: After that kill, how long the killed processes may take to release the pipes. Past this, a
#: process that escaped the group still holds a pipe: stop reading rather than hang.
_KILLED_DRAIN_TIMEOUT = 1.0
#: Once reading has ended, how long closing waits for the host's log handlers to replay what
#: was read. Past this, the rest is counted dropped and reported: a handler that takes seconds
#: per record must not hold a restart or the host's shutdown for hours.
STDIO_REPLAY_TIMEOUT = 5.0

OpenStdio = Callable[[int], StdioDestination]
"""``open_stdio(pid)``: where the output of the runner process ``pid`` goes."""


class RunnerProcess:
    """A started runner. Create with :meth:`start`; always finish with :meth:`close`."""

    def __init__(self, popen: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.started = time.monotonic()
        #: Resolves to ``Popen.returncode`` once the runner has exited and been reaped.
        self.exited = exited
        self._capture: StdioCapture | None = None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin_line: bytes,
        open_stdio: OpenStdio,
        spawned: Callable[[RunnerProcess], None] | None = None,
    ) -> RunnerProcess:
        """Spawn ``argv``, write ``stdin_line`` on its stdin and close it, capture stdio.

        ``spawned`` is told of the process as soon as it exists, before it can read its stdin:
        whatever it connects to may then already know its pid. ``open_stdio(pid)`` says where
        its stdout/stderr output goes (read and replayed by threads, see
        :class:`~isoplug.host.stdio.StdioCapture`). If starting fails after the spawn, the
        process is killed before the error is raised. Raises :class:`OSError` when the process
        cannot be started.
        """
        loop = asyncio.get_running_loop()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=out_write,
                stderr=err_write,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            # The runner has its copies; ours would keep the pipes open after it exits.
            os.close(out_write)
            os.close(err_write)
        exited: asyncio.Future[int] = loop.create_future()
        process = cls(popen, exited)
        threading.Thread(
            target=process._wait_in_thread,
            args=(loop,),
            name=f"isoplug-wait-{popen.pid}",
            daemon=True,
        ).start()
        owned = [out_read, err_read]  # until the capture owns them
        try:
            if spawned is not None:
                spawned(process)
            capture = StdioCapture(
                popen.pid,
                {"stdout": out_read, "stderr": err_read},
                open_stdio(popen.pid),
                loop=loop,
            )
            owned = []
            process._capture = capture
            capture.start()
            # A bootstrap is small, but a write to a pipe can block: keep it off the loop.
            await asyncio.to_thread(process._write_stdin, stdin_line)
        except BaseException:
            # Cancelled, or the pipes could not be read: the process must not outlive this
            # (the capture, if started, ends by itself once the killed process's pipes close).
            process.signal_group(signal.SIGKILL)
            if process._capture is not None:
                process._capture.seal()
            if popen.stdin is not None:
                popen.stdin.close()
            for fd in owned:
                os.close(fd)
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

    async def close(
        self,
        drain_timeout: float = STDIO_DRAIN_TIMEOUT,
        replay_timeout: float = STDIO_REPLAY_TIMEOUT,
    ) -> bool:
        """After the exit: finish reading stdio, kill leftover descendants, release the pipes.

        Output still in the pipes, and whatever processes the plugins forked write to them, is
        read until both pipes end or ``drain_timeout`` passes; then the runner's process group
        is killed (and that end reported on the plugin's logger when it still held the pipes).
        Then waits up to ``replay_timeout`` for what was read to be replayed; the rest is
        counted dropped and reported. Returns True when processes of the runner's group were
        still alive (a plugin forked a child that outlived the runner) and had to be killed.
        Always releases everything; never blocks the event loop.
        """
        capture = self._capture
        leftovers = False
        try:
            if capture is not None and not await capture.wait_read(drain_timeout):
                leftovers = self.signal_group(signal.SIGKILL)
                ended = await capture.wait_read(_KILLED_DRAIN_TIMEOUT)
                if not ended:
                    capture.stop_reading()
                what = (
                    "killed its process group"
                    if ended
                    else "killed its process group, but they stayed open (a process left the "
                    "group?): stopped reading them, and anything written to them from now on "
                    "is lost"
                )
                capture.report(
                    f"stdout/stderr of runner pid {self.pid} were still open {drain_timeout:g} s "
                    f"after it exited (held by processes its plugins forked); {what}"
                )
                if not ended:
                    _log.warning(
                        "runner %d: stdout/stderr still open after its process group was "
                        "killed (a descendant left the group?); stopped reading them",
                        self.pid,
                    )
            leftovers = self.signal_group(signal.SIGKILL) or leftovers
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
        finally:
            if capture is not None:
                # No-ops once done; on a cancel, they make sure the threads end.
                capture.stop_reading()
                capture.seal()
                if not capture.replayed:
                    capture.abandon()
            if self._popen.poll() is None:
                self._popen.kill()
        return leftovers
