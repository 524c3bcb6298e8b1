"""Watching folders for hot reload, in a thread the host owns (``isoplug-reload``).

watchfiles' ``awatch`` runs its blocking watch through anyio's worker threads: one ("AnyIO
worker thread") stayed idle in the application after the host's close, for as long as its
event loop lived, against the promise that the host's threads are its own, named
``isoplug-…``, and end with it. :class:`FolderWatch` runs watchfiles' blocking watches
in a thread of its own instead, hands each batch of changes to the loop, and ends the thread
(and waits for its end) when it is left. What is watched, and what read for changes where a
name is not UTF-8, is :mod:`isoplug.host.reload_layout`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType

from isoplug.host.reload_layout import DEBOUNCE_MS, STEP_MS, Batch, WatchLayout
from isoplug.host.reload_poll import MAX_POLLED_ENTRIES, POLL_MS
from isoplug.log_guard import guarded_logger
from isoplug.wire.sanitize import clean_path

_log = guarded_logger("isoplug.host")

__all__ = ["DEBOUNCE_MS", "POLL_MS", "STEP_MS", "FolderWatch"]

#: An empty batch now and then: the first one says the watcher is up (its watches were set
#: before it); then one every 0.1 s without changes, for the reloader to look at its roots.
_EMPTY_BATCH_MS = 100

#: Cap for a folder's path quoted in the host's records (a folder's name is anyone's text).
_MAX_PATH_CHARS = 1024

#: The folders said to be polled for their names (see FolderWatch._say_polled).
_SAID_POLLED: set[str] = set()


class FolderWatch:
    """``async with FolderWatch(roots) as watch: async for batch in watch.batches(): ...``:
    the changes under ``roots``, batch by batch (an empty one every 0.1 s without changes).
    ``plugins_dir``: the root whose folders are plugins' (one of them holding a name that is
    not UTF-8 is read for changes alone). The next batch is watched for once the last one was
    handled, so changes made meanwhile come together, as with ``awatch``. Leaving the block
    stops the thread and waits for its end."""

    def __init__(self, roots: Sequence[Path], plugins_dir: Path | None = None) -> None:
        self._roots = tuple(roots)
        self._plugins_dir = str(plugins_dir) if plugins_dir is not None else None
        self._stop = threading.Event()
        #: Set when the loop has handled the last batch: the thread may watch again.
        self._handled = threading.Event()
        self._batches: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue()
        self._thread = threading.Thread(target=self._watch, name="isoplug-reload", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: asyncio.Future[None] | None = None
        self._layout: WatchLayout | None = None
        self._said_capped = False

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
        # The watches look at the stop event every STEP_MS: a cancelled close (the
        # reloader's task cancelled again) stops waiting, and the thread still ends by itself.
        await asyncio.shield(self._ended)
        # It has handed its last word to the loop: all that is left is returning.
        self._thread.join()

    @property
    def polled(self) -> tuple[str, ...]:
        """The folders read for changes now, not watched (they hold a name that is not
        UTF-8)."""
        return self._layout.polled if self._layout is not None else ()

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
        folder past the limit, unsaid: so the first try is without it."""
        import watchfiles

        layout = WatchLayout(
            [str(root) for root in self._roots],
            self._plugins_dir,
            # Caches and editor files, for the polls too.
            watchfiles.DefaultFilter(),
            self._say_polled,
            self._say_capped,
        )
        self._layout = layout
        skip_unreadable = polling = False
        while True:
            try:
                layout.start(skip_unreadable=skip_unreadable, force_polling=polling)
            except PermissionError:
                if skip_unreadable:
                    raise
                skip_unreadable = True
                continue
            except OSError as error:
                if polling or "watch limit" not in str(error):
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
                continue
            try:
                self._hand_batches(layout)
            finally:
                layout.close()
            return

    def _hand_batches(self, layout: WatchLayout) -> None:
        """Each round's changes to the loop, one batch at a time, and an empty batch every
        _EMPTY_BATCH_MS without changes (the first at once: the watches are set)."""
        handed_at = -math.inf
        while True:
            batch = layout.round(self._stop)
            if batch is None:
                return
            if not batch and time.monotonic() - handed_at < _EMPTY_BATCH_MS / 1000:
                continue
            if not self._hand(batch):
                return  # the loop is closed: no batch will be handled any more
            handed_at = time.monotonic()
            self._handled.wait()
            self._handled.clear()
            if self._stop.is_set():
                return

    def _say_polled(self, roots: list[str], why: str) -> None:
        # Once per folder: a new watch (a linked plugin came) meets the same name again.
        roots = [root for root in roots if root not in _SAID_POLLED]
        if not roots:
            return
        _SAID_POLLED.update(roots)
        _log.warning(
            "reload: %s cannot be watched for changes (watchfiles takes only UTF-8 paths: %s); "
            "reading it for changes every %.1f s or more instead (%d files and folders at "
            "most), while the other folders stay watched; rename what is not UTF-8 (or move "
            "the plugins folder below folders named in UTF-8) and restart the host to be told "
            "of changes at once",
            shown_path([Path(root) for root in roots]),
            clean_path(why, _MAX_PATH_CHARS),
            POLL_MS / 1000,
            MAX_POLLED_ENTRIES,
        )

    def _say_capped(self, folder: str) -> None:
        # Once per watch: every read stops there again.
        if self._said_capped:
            return
        self._said_capped = True
        _log.warning(
            "reload: the folders read for changes (not watched) hold more than %d files and "
            "folders: each read stops at %d, in %s, and changes past them are not seen; keep "
            "a plugin's data out of its folder, or name its files in UTF-8 and restart the "
            "host, to have every change seen",
            MAX_POLLED_ENTRIES,
            MAX_POLLED_ENTRIES,
            clean_path(folder, _MAX_PATH_CHARS),
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
            with open("/proc/sys/" + name.replace(".", "/"), encoding="ascii") as setting:
                said.append(f"{name} = {setting.read().strip()}")
        except OSError:
            continue
    return ", ".join(said) or "the limit is not readable here"
