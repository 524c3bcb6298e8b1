"""A runner's fd-level stdout and stderr, read by host threads and replayed as log records.

What a plugin prints from Python travels its log connection as records. What still arrives on
the runner's fd 1 and fd 2 pipes is fd-level output: C extensions, child processes,
faulthandler's crash dump, a runner that cannot log. :class:`StdioCapture` handles it with two
threads per runner process, so that the host's event loop never touches it and a plugin never
waits on the host:

- the **reader** thread (:mod:`isoplug.host.stdio_reader`) only reads both pipes, splits lines
  (:mod:`isoplug.host.stdio_lines`) and classifies them, and puts the records in a bounded
  backlog (:mod:`isoplug.host.stdio_backlog`): the pipes are always drained;
- the **replay** thread (:mod:`isoplug.host.stdio_replay`) takes records from the backlog and
  replays them with the runner's :class:`~isoplug.logs.LogReplayer` (see
  :class:`~isoplug.host.stdio_replay.StdioDestination`) on ``plugin.<runner id>.stdout`` /
  ``.stderr``.

When the host's handlers cannot keep up, records are dropped, never pushed back onto the
plugin: below WARNING first, counted and reported on the plugin's logger (see
:mod:`isoplug.host.stdio_backlog`).

This module wires the two threads to the event loop, and is the entry point of the capture:
the public names of the ``stdio_*`` modules are importable from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping

from isoplug.host.stdio_backlog import BACKLOG_BYTES, BACKLOG_RECORDS, Backlog, report_entry
from isoplug.host.stdio_lines import MAX_LINE_BYTES, CapturedLine, LineSplitter
from isoplug.host.stdio_reader import CLASSIFY_SLICE, IDLE_FLUSH_DELAY, PENDING_BYTES, StdioReader
from isoplug.host.stdio_replay import StdioDestination, StdioReplay
from isoplug.log_guard import guarded_logger
from isoplug.logs.gil import HOST_SHARE

_log = guarded_logger("isoplug.host")

__all__ = [
    "BACKLOG_BYTES",
    "BACKLOG_RECORDS",
    "CLASSIFY_SLICE",
    "IDLE_FLUSH_DELAY",
    "MAX_LINE_BYTES",
    "PENDING_BYTES",
    "CapturedLine",
    "LineSplitter",
    "StdioCapture",
    "StdioDestination",
]


class StdioCapture:
    """Reads the stdout and stderr pipes of the runner ``pid`` in a thread, and replays what
    they carry in another (see the module docstring).

    ``pipes`` maps ``"stdout"`` / ``"stderr"`` to the read end of each pipe; the capture owns
    them from now on (the reader thread closes them when it ends). ``loop`` is the event loop
    on which :meth:`wait_read` and :meth:`wait_replayed` are awaited. The owner calls
    :meth:`seal` once it has no more reports to make: the replay thread ends after that and the
    reader's end, and then tells the destination.
    """

    def __init__(
        self,
        pid: int,
        pipes: Mapping[str, int],
        destination: StdioDestination,
        *,
        loop: asyncio.AbstractEventLoop,
        max_records: int = BACKLOG_RECORDS,
        max_bytes: int = BACKLOG_BYTES,
    ) -> None:
        self.pid = pid
        self._destination = destination
        self._loop = loop
        self._backlog = Backlog(max_records, max_bytes)
        # One share for every runner's stdio threads and log connections: they pause together,
        # so the event loop's thread gets the GIL between their slices (isoplug.logs.gil).
        self._reader = StdioReader(pid, pipes, self._backlog, HOST_SHARE)
        self._replay = StdioReplay(pid, self._backlog, destination, HOST_SHARE)
        self._read_done: asyncio.Future[None] = loop.create_future()
        self._replay_done: asyncio.Future[None] = loop.create_future()
        self._sealed = False

    def start(self) -> None:
        """Start the reader and replay threads. If a thread cannot be started (the process is
        out of threads), the pipes are closed and the destination told before this raises."""
        try:
            threading.Thread(
                target=self._run_replay, name=f"isoplug-stdio-replay-{self.pid}", daemon=True
            ).start()
        except BaseException:
            self._reader.close()
            self._destination.finished()
            _resolve(self._loop, self._read_done)
            _resolve(self._loop, self._replay_done)
            raise
        try:
            threading.Thread(
                target=self._run_reader, name=f"isoplug-stdio-read-{self.pid}", daemon=True
            ).start()
        except BaseException:
            self._reader.close()
            self._backlog.end()
            _resolve(self._loop, self._read_done)
            raise

    def drop_inherited(self) -> None:
        """In a forked child of the host: close the child's copies of the pipes."""
        self._reader.drop_inherited()

    def _run_reader(self) -> None:
        try:
            self._reader.run()
        finally:
            _resolve(self._loop, self._read_done)

    def _run_replay(self) -> None:
        try:
            self._replay.run()
        finally:
            _resolve(self._loop, self._replay_done)

    # -- control, from the event loop ---------------------------------------------------------

    async def wait_read(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for the reader to finish (both pipes at end of stream,
        or :meth:`stop_reading`); True if it has. Never blocks the loop."""
        return await _wait(self._read_done, timeout)

    async def wait_replayed(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds until every record read was replayed (or counted
        dropped) and the destination told; True if so. Never blocks the loop."""
        return await _wait(self._replay_done, timeout)

    @property
    def reading(self) -> bool:
        """True until the reader has finished (both pipes at end of stream, or stopped)."""
        return not self._read_done.done()

    @property
    def replayed(self) -> bool:
        """True once everything read was replayed (or counted dropped)."""
        return self._replay_done.done()

    def stop_reading(self) -> None:
        """Stop reading now: what was read is still replayed, what is unread is left."""
        self._reader.stop()

    def report(self, text: str) -> None:
        """Have ``text`` reported (WARNING on the plugin's logger) after the records read so
        far, by the replay thread; after :meth:`seal`, by the host's own logger instead."""
        if self._sealed:
            _log.warning("runner %d: %s", self.pid, text)
            return
        self._backlog.put([report_entry(text)])

    def seal(self) -> None:
        """No more reports will come: the replay thread ends once the reader has ended and
        everything is replayed. Idempotent."""
        if not self._sealed:
            self._sealed = True
            self._backlog.end()

    def abandon(self) -> None:
        """Stop replaying: the records still in the backlog, and any read from now on, are
        counted dropped and reported instead (the host is closing the runner and its handlers
        are too slow to wait for)."""
        self._replay.abandon()


async def _wait(future: asyncio.Future[None], timeout: float | None) -> bool:
    if future.done():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.shield(future)
    return future.done()


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Resolve ``future`` from a thread, if its loop still runs."""

    def done() -> None:
        if not future.done():
            future.set_result(None)

    with contextlib.suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(done)
