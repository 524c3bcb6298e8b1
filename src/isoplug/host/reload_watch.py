"""Watching folders for hot reload, in a thread the host owns (``isoplug-reload``).

watchfiles' ``awatch`` runs its blocking watch through anyio's worker threads: one ("AnyIO
worker thread") stayed idle in the application after the host's close, for as long as its
event loop lived, against the promise that the host's threads are its own, named
``isoplug-…``, and end with it. :class:`FolderWatch` runs watchfiles' blocking ``watch``
in a thread of its own instead, hands each batch of changes to the loop, and ends the thread
(and waits for its end) when it is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from isoplug.host.reload_poll import POLL_MS, FolderPoll, is_utf8_path
from isoplug.log_guard import guarded_logger
from isoplug.wire.sanitize import clean_path

_log = guarded_logger("isoplug.host")

__all__ = ["DEBOUNCE_MS", "POLL_MS", "STEP_MS", "FolderWatch"]

#: watchfiles groups the changes of this many milliseconds into one batch: an editor's save
#: (write, rename, chmod) is one batch, and a save still reaches the runner quickly.
DEBOUNCE_MS = 50
#: How often watchfiles checks for the end of a batch, and whether to stop, in milliseconds.
STEP_MS = 10
#: An empty batch now and then: the first one says the watcher is up (its watches were set
#: before it), after this many ms; 0.1 s, not watchfiles' 5 s, so that the host's "watching"
#: is not late. The watch wakes every STEP_MS anyway: the shorter wait costs next to nothing.
_EMPTY_BATCH_MS = 100

#: Cap for a folder's path quoted in the host's records (a folder's name is anyone's text).
_MAX_PATH_CHARS = 1024

#: The folders said to be polled for their names (see FolderWatch._say_polled).
_SAID_POLLED: set[str] = set()

#: One batch: (watchfiles.Change, path) pairs.
Batch = set[tuple[object, str]]


class FolderWatch:
    """``async with FolderWatch(roots) as watch: async for batch in watch.batches(): ...``:
    the changes under ``roots``, batch by batch (an empty one every 0.1 s without changes).
    The next batch is watched for once the last one was handled, so changes made meanwhile
    come together, as with ``awatch``. Leaving the block stops the thread and waits for its
    end."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._roots = tuple(roots)
        self._stop = threading.Event()
        #: Set when the loop has handled the last batch: the thread may watch again.
        self._handled = threading.Event()
        self._batches: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue()
        self._thread = threading.Thread(target=self._watch, name="isoplug-reload", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Future[None] | None = None
        #: watchfiles' DefaultFilter (caches, editor files), for the polls too.
        self._filter: Any = None

    async def __aenter__(self) -> FolderWatch:
        self._loop = asyncio.get_running_loop()
        self._ended = self._loop.create_future()
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._handled.set()
        assert self._ended is not None
        # watchfiles looks at the stop event every STEP_MS: a cancelled close (the reloader's
        # task cancelled again) stops waiting, and the thread still ends by itself.
        await asyncio.shield(self._ended)
        # It has handed its last word to the loop: all that is left is returning.
        self._thread.join()

    async def batches(self) -> AsyncIterator[Batch]:
        """Each batch, until the watch ends; raises what ended it when it failed."""
        while True:
            batch = await self._batches.get()
            if batch is None:
                return
            if isinstance(batch, BaseException):
                raise batch
            yield batch
            self._handled.set()

    def _watch(self) -> None:
        ending: BaseException | None = None
        try:
            self._watch_until_stopped()
        except BaseException as exc:
            # Told to the loop, which raises it from batches(): the reloader's task ends
            # with it, and its end is reported (see isoplug.host.reload.report_reloader_end).
            ending = exc
        self._hand(ending)
        self._hand_end()

    def _watch_until_stopped(self) -> None:
        """Watch with the kernel's notifications; where the OS's limit of file watches is
        reached as the watch is set up, poll instead, said once. watchfiles' own flag for
        skipping unreadable folders would drop that error too, the watch then blind to every
        folder past the limit, unsaid: so the first try is without it. A folder watchfiles
        cannot take (a path that is not UTF-8, above it or inside it) is read for changes
        by :class:`FolderPoll` instead, said once, while the others stay watched."""
        import watchfiles

        self._filter = watchfiles.DefaultFilter()
        skip_unreadable = polling = False
        polled = [root for root in map(str, self._roots) if not is_utf8_path(root)]
        if polled:
            self._say_polled(polled, "its path is not UTF-8 text")
        poll = FolderPoll(polled, self._filter) if polled else None
        while True:
            notified = [root for root in map(str, self._roots) if root not in polled]
            started = False
            watched_since = time.time_ns()
            try:
                for changes in self._notified(notified, skip_unreadable, polling):
                    started = True
                    watched_since = time.time_ns()
                    batch = changes | poll.changes() if poll and poll.due() else changes
                    if not self._hand(batch):
                        return  # the loop is closed: no batch will be handled any more
                    self._handled.wait()
                    self._handled.clear()
                    if self._stop.is_set():
                        return
                return
            except PermissionError:
                if started or skip_unreadable:
                    raise
                skip_unreadable = True
            except _rust_error() as error:
                undecodable = _undecodable_path(error)
                if undecodable is None:
                    raise
                # The watch is over (watchfiles keeps the error): the folder holding that
                # name is read by polls from now on, catching up on what the watch lost.
                moved = [root for root in notified if undecodable.startswith(root)] or notified
                self._say_polled(moved, f"{undecodable} is not UTF-8 text")
                polled += moved
                poll = FolderPoll(polled, self._filter, changed_since=watched_since - _CATCH_UP_NS)
            except OSError as error:
                if started or polling or "watch limit" not in str(error):
                    raise
                _log.warning(
                    "reload: the system's limit of file watches is reached (%s): polling "
                    "%s for changes every %.1f s instead, which reads every folder each "
                    "time; raise the limit (sysctl fs.inotify.max_user_watches=524288) and "
                    "restart the host to be told of changes at once",
                    _watch_limits(),
                    shown_path(self._roots),
                    POLL_MS / 1000,
                )
                polling = True

    def _notified(self, roots: list[str], skip_unreadable: bool, polling: bool) -> Iterator[Batch]:
        """watchfiles' batches of ``roots``, or, with none, an empty one every STEP_MS
        (the polled folders are read between them)."""
        import watchfiles

        if not roots:
            while not self._stop.wait(_EMPTY_BATCH_MS / 1000):
                yield set()
            yield set()
            return
        for changes in watchfiles.watch(
            *roots,
            watch_filter=self._filter,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=self._stop,
            yield_on_timeout=True,
            rust_timeout=_EMPTY_BATCH_MS,
            # A folder the host may not read (skipped, said as a problem) must not
            # end the watch of every other one.
            ignore_permission_denied=skip_unreadable,
            force_polling=polling,
            poll_delay_ms=POLL_MS,
        ):
            yield set(changes)

    def _say_polled(self, roots: list[str], why: str) -> None:
        # Once per folder: a new watch (a linked plugin came) meets the same name again.
        roots = [root for root in roots if root not in _SAID_POLLED]
        if not roots:
            return
        _SAID_POLLED.update(roots)
        _log.warning(
            "reload: %s cannot be watched for changes (watchfiles takes only UTF-8 paths: %s); "
            "reading it for changes every %.1f s instead, which reads every folder in it each "
            "time; rename what is not UTF-8 (or move the plugins folder below folders named "
            "in UTF-8) and restart the host to be told of changes at once",
            shown_path([Path(root) for root in roots]),
            clean_path(why, _MAX_PATH_CHARS),
            POLL_MS / 1000,
        )

    def _hand(self, item: Batch | BaseException | None) -> bool:
        """Hand ``item`` to the loop; False when the loop is closed (nobody waits for it)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._batches.put_nowait, item)
        except RuntimeError:
            return False
        return True

    def _hand_end(self) -> None:
        assert self._loop is not None and self._ended is not None
        ended = self._ended

        def settle() -> None:
            if not ended.done():
                ended.set_result(None)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle)


def shown_path(roots: Sequence[Path]) -> str:
    """The watched folders, as the host's records may quote them."""
    return ", ".join(clean_path(root, _MAX_PATH_CHARS) for root in roots)


def _watch_limits() -> str:
    """The limits the kernel sets on file watches, as ``sysctl`` names them."""
    said = []
    # The second: the limit of this user namespace (a container's), which may be lower.
    for name in ("fs.inotify.max_user_watches", "user.max_inotify_watches"):
        try:
            with open("/proc/sys/" + name.replace(".", "/")) as setting:
                said.append(f"{name} = {setting.read().strip()}")
        except OSError:
            continue
    return ", ".join(said) or "the limit is not readable here"


def _rust_error() -> type[Exception]:
    from watchfiles._rust_notify import WatchfilesRustInternalError

    return WatchfilesRustInternalError


#: watchfiles' words for a changed path that is not UTF-8 (its Rust ``{:?}`` of the path).
_UNDECODABLE = re.compile(r'Unable to decode path "(?P<path>.*)" to string')
#: How far back, before the last batch a failed watch handed over, a poll's first read
#: counts a file as changed: what the watch saw in its last moments, and lost with its end.
_CATCH_UP_NS = 1_000_000_000


def _undecodable_path(error: Exception) -> str | None:
    """The path (as watchfiles shows it: ``caf\\xE9.txt``) whose change ended the watch
    ``error`` ended, when that is why it ended."""
    found = _UNDECODABLE.search(str(error))
    return found["path"] if found else None
