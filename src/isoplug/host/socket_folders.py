"""The host's folders in the temporary folder, made again when a cleaner deleted them.

The host's two listeners (the runners' control connections, on the loop; their log
connections, the log bridge's threads) each listen in a private folder of ``$TMPDIR``
(``isoplug-<pid>-...``, mode 0700), and runners with an interpreter of their own import isoplug
from a third (:mod:`isoplug.host.isoplug_link`). A temporary-file cleaner (systemd-tmpfiles,
tmpreaper, an ``rm -rf /tmp/isoplug-*``) may delete them while a host runs for weeks. The
connections already made go on, but a runner started after that could not connect, and its
plugin would crash until it failed for good. So before each runner's start the host asks
whether they are whole (a few ``lstat`` calls), and where one is not, listens again, saying so
in one WARNING: at the same path where it can make the folder again (0700, by this process,
never the folder someone made again under the old name: see
:mod:`isoplug.transport.private_places`), so that every process given the address (a plugin's
own children, started with ``ctx.log_child_env()``) reaches it again; else in a fresh private
folder, which only runners started from then on are given. Each runner process still gets
tokens of its own; the listeners admit connections as before.

Between starts, :meth:`SocketFolders.keep` does the same every :data:`KEEP_INTERVAL` seconds,
and sets the folders', sockets' and owner locks' times to now: cleaners that delete by age
(systemd-tmpfiles' 10 days for ``/tmp``, tmpreaper) then never find them old.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from isoplug.errors import TransportError
from isoplug.host.isoplug_link import made_link, renew_if_lost
from isoplug.host.logbridge import LogBridge
from isoplug.log_guard import guarded_logger
from isoplug.transport import Listener, parse_address
from isoplug.transport.owner_lock import owner_lock_path
from isoplug.wire.sanitize import clean_path

__all__ = ["SocketFolders"]

_log = guarded_logger("isoplug.host")

#: A path, or a text quoting paths, in a record (the host's own, but a record quotes no path raw).
_MAX_PATH_CHARS = 1024
#: Seconds between two checks of the folders (and settings of their times) while the host runs.
KEEP_INTERVAL = 30.0


class SocketFolders:
    """The folders of one host's listeners (``listener``: the control listener) and of the
    process's isoplug link, checked before each runner's start."""

    def __init__(self, listener: Listener, log_bridge: LogBridge) -> None:
        self._listener = listener
        self._log_bridge = log_bridge
        # Two runners starting at once: one of them listens again, and one warning says so.
        self._checking = asyncio.Lock()

    def keep(self) -> None:
        """Check the folders, and make them young, every :data:`KEEP_INTERVAL` seconds until
        the control listener closes (the host's close, or its release unclosed).

        A timer of the loop's that holds these folders weakly, not a task waiting in a sleep:
        a task is the loop's strong reference to its coroutine's frame, which holds the
        listener, the log bridge and through them the host, and a host never closed must
        still be collected (and warned of: see :mod:`isoplug.host.unclosed`) once its loop
        ended."""
        loop = asyncio.get_running_loop()
        folders = weakref.ref(self)
        # The timer of the next check; None once the listener closed (no more checks).
        timer: list[asyncio.TimerHandle | None] = []

        def check() -> None:
            kept = folders()
            if kept is not None:
                task = loop.create_task(kept._check(), name="isoplug-socket-folders")
                task.add_done_callback(checked)

        def checked(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and (error := task.exception()) is not None:
                # A bug of isoplug's: said with its traceback; the checks go on.
                _log.error("checking the host's folders failed", exc_info=error)
            schedule()

        def schedule() -> None:
            if folders() is not None and not loop.is_closed() and None not in timer:
                timer[:] = [loop.call_later(KEEP_INTERVAL, check)]

        def stop_keeping() -> None:
            for handle in timer:
                if handle is not None:
                    handle.cancel()
            timer[:] = [None]

        self._listener.on_close.append(stop_keeping)
        schedule()

    async def _check(self) -> None:
        try:
            control, logs = await self.addresses()
        except TransportError as exc:
            _log.warning(
                "%s; tried again in %g s, and at each runner's start",
                clean_path(exc, _MAX_PATH_CHARS),
                KEEP_INTERVAL,
            )
            return
        sockets = [parse_address(control).path, parse_address(logs).path]
        link = made_link()  # its folder and the link itself, or nothing
        folders = [*map(os.path.dirname, sockets), *link[:1]]
        # The owner locks too: a cleaner that deleted one as old would leave its folder to be
        # judged by its pid alone, never removed from another pid namespace.
        made_young([*sockets, *folders, *link[1:], *map(owner_lock_path, folders)])

    async def addresses(self) -> tuple[str, str]:
        """Where a runner started now connects: the control listener's address and the log
        bridge's, each listening again first where its folder was lost. Raises
        :class:`~isoplug.errors.TransportError` when one cannot listen again (the runner
        cannot start: its supervisor retries with backoff, as after a crash)."""
        async with self._checking:
            renewed: list[str] = []
            before = str(self._listener.address)
            lost = await self._listener.listen_again_if_lost()
            if lost is not None:
                renewed.append(
                    f"the runners' control listener: {lost}; listening again "
                    + _where(before, str(self._listener.address))
                )
            before = self._log_bridge.address
            lost = self._log_bridge.listen_again_if_lost()
            if lost is not None:
                renewed.append(
                    f"the log listener: {lost}; listening again "
                    + _where(before, self._log_bridge.address)
                )
            link = renew_if_lost()
            if link is not None:
                renewed.append(
                    f"the isoplug link of runners with an interpreter of their own: {link[0]}; "
                    f"made again in {link[1]}"
                )
            if renewed:
                _log.warning(
                    "the host's folders in the temporary folder were deleted (by a "
                    "temporary-file cleaner?): %s. Connections made go on (to keep a cleaner "
                    "away from them, see docs/operations.md, 'Temporary-file cleaners')",
                    clean_path("; ".join(renewed), _MAX_PATH_CHARS * len(renewed)),
                )
        return str(self._listener.address), self._log_bridge.address


def _where(before: str, now: str) -> str:
    if now == before:
        return "at the same path, made again"
    return f"at {now} (runners started from now on are given it)"


def made_young(paths: list[str]) -> None:
    """Set the access and modification times of ``paths`` (folders, sockets, a link itself)
    to now, so that a cleaner deleting what is old by those never finds them old."""
    for path in paths:
        try:
            os.utime(path, follow_symlinks=False)
        except FileNotFoundError:
            # Deleted since the check just made: the next check (at the next start, or
            # interval) listens again, and says so.
            _log.debug(
                "could not make %s young: it was deleted just now",
                clean_path(path, _MAX_PATH_CHARS),
            )
        except OSError as exc:
            _log.warning(
                "could not set the times of %s to now (a temporary-file cleaner may delete it "
                "as old): %s",
                clean_path(path, _MAX_PATH_CHARS),
                clean_path(exc, _MAX_PATH_CHARS),
            )
