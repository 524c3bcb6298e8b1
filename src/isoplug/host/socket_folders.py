"""The host's folders in the temporary folder, made again when a cleaner deleted them.

The host's two listeners (the runners' control connections, on the loop; their log
connections, the log bridge's threads) each listen in a private folder of ``$TMPDIR``
(``isoplug-<pid>-...``, mode 0700), and runners with an interpreter of their own import isoplug
from a third (:mod:`isoplug.host.isoplug_link`). A temporary-file cleaner (systemd-tmpfiles,
tmpreaper, an ``rm -rf /tmp/isoplug-*``) may delete them while a host runs for weeks. The
connections already made go on, but a runner started after that could not connect, and its
plugin would crash until it failed for good. So before each runner's start the host asks
whether they are whole (a few ``lstat`` calls), and where one is not, listens again in a fresh
private folder, made as the first (0700, named after the host, never the folder someone made
again under the old name: :mod:`isoplug.transport.private_places`), saying so in one WARNING.
Each runner process still gets tokens of its own; the listeners admit connections as before.
"""

from __future__ import annotations

import asyncio
import logging

from isoplug.host.isoplug_link import renew_if_lost
from isoplug.host.logbridge import LogBridge
from isoplug.transport import Listener
from isoplug.wire.sanitize import clean_path

__all__ = ["SocketFolders"]

_log = logging.getLogger("isoplug.host")

#: A path, or a text quoting paths, in a record (the host's own, but a record quotes no path raw).
_MAX_PATH_CHARS = 1024


class SocketFolders:
    """The folders of one host's listeners (``listener``: the control listener) and of the
    process's isoplug link, checked before each runner's start."""

    def __init__(self, listener: Listener, log_bridge: LogBridge) -> None:
        self._listener = listener
        self._log_bridge = log_bridge
        # Two runners starting at once: one of them listens again, and one warning says so.
        self._checking = asyncio.Lock()

    async def addresses(self) -> tuple[str, str]:
        """Where a runner started now connects: the control listener's address and the log
        bridge's, each listening again first where its folder was lost. Raises
        :class:`~isoplug.errors.TransportError` when one cannot listen again (the runner
        cannot start: its supervisor retries with backoff, as after a crash)."""
        async with self._checking:
            renewed: list[str] = []
            lost = await self._listener.listen_again_if_lost()
            if lost is not None:
                renewed.append(
                    f"the runners' control listener: {lost}; listening again at "
                    f"{self._listener.address}"
                )
            lost = self._log_bridge.listen_again_if_lost()
            if lost is not None:
                renewed.append(
                    f"the log listener: {lost}; listening again at {self._log_bridge.address}"
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
                    "temporary-file cleaner?): %s. Runners started from now on use the new "
                    "ones; those running keep their connections (to keep a cleaner away from "
                    "them, see docs/operations.md, 'Temporary-file cleaners')",
                    clean_path("; ".join(renewed), _MAX_PATH_CHARS * len(renewed)),
                )
        return str(self._listener.address), self._log_bridge.address
