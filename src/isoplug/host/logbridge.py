"""The host end of every runner's log connection: records land in the host's own logging.

Each runner opens a second connection with role ``"logs"`` and its own token (so its identity
is proven by the token, never by what it claims). The bridge replays that connection's batches
with a :class:`~isoplug.logs.LogReplayer`:

- a runner that hosts one plugin ``p`` has every record put under ``plugin.p`` (its root
  logger is ``plugin.p`` itself; its ``plugin.p.x`` stays ``plugin.p.x``);
- a runner that hosts a group routes each member's ``plugin.<member>...`` loggers to that
  member, and anything else to ``plugin.<group>``;
- every record carries ``plugin_id`` and ``runner_pid``, set here from the manifest and the
  kernel's view of the socket (``SO_PEERCRED``), overriding anything the runner sent.

Metrics are kept per runner across restarts, so a crash loop does not reset them.
"""

from __future__ import annotations

import logging
from typing import Any

from isoplug.errors import ConnectionClosed
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.logs import LogMetrics, LogReplayer, ReplayLimits
from isoplug.rpc import Peer

__all__ = ["LogBridge"]

_log = logging.getLogger("isoplug.host")


class LogBridge:
    """Serves the log connections of every runner of one host."""

    def __init__(self, limits: ReplayLimits | None = None) -> None:
        self.limits = limits or ReplayLimits()
        self._metrics: dict[str, LogMetrics] = {}

    def metrics(self, runner_id: str) -> LogMetrics:
        """A snapshot of the log metrics of one runner (all its connections so far)."""
        return self._metrics.setdefault(runner_id, LogMetrics()).snapshot()

    async def serve(self, supervisor: RunnerSupervisor, peer: Peer) -> None:
        """Own one runner's log connection until it closes."""
        credentials = peer.stream.peer_credentials
        expected_pid = supervisor.pid
        runner_pid = credentials.pid if credentials is not None else expected_pid
        if credentials is not None and expected_pid is not None and credentials.pid != expected_pid:
            # A process the runner forked, reusing its token: keep its records (nothing is
            # dropped silently) but say whose they are.
            _log.info(
                "runner %s: log connection from pid %d, a child of runner pid %d",
                supervisor.runner_id,
                credentials.pid,
                expected_pid,
            )
        replayer = self._replayer(
            supervisor, runner_pid, credentials.pid if credentials is not None else None
        )
        peer.on_log_batch(replayer.receive)
        try:
            await peer.wait_closed()
        finally:
            # When the runner itself dies, its supervisor reports how (exit code, signal); a
            # second warning from here would only repeat it. A process the runner forked has
            # no supervisor, so its abrupt end is reported here.
            replayer.finish(
                clean=isinstance(peer.close_error, ConnectionClosed) or runner_pid == expected_pid
            )

    def _replayer(
        self, supervisor: RunnerSupervisor, runner_pid: int | None, connected_pid: int | None
    ) -> LogReplayer:
        """``connected_pid`` is the pid the socket vouches for (None when it cannot say)."""
        runner_id = supervisor.runner_id
        members = list(supervisor.manifests)
        identity: dict[str, Any] = {"runner_pid": runner_pid}
        if len(members) == 1:
            (plugin_id,) = members
            prefix = f"plugin.{plugin_id}"
            identity["plugin_id"] = plugin_id
            routes: dict[str, tuple[str, dict[str, Any]]] = {}
        else:
            prefix = f"plugin.{runner_id}"
            identity["plugin_id"] = runner_id
            routes = {
                f"plugin.{member}": (f"plugin.{member}", {"plugin_id": member})
                for member in members
            }
        return LogReplayer(
            prefix,
            identity=identity,
            strip_prefixes=(prefix,),
            routes=routes,
            limits=self.limits,
            description=f"plugin {runner_id}",
            metrics=self._metrics.setdefault(runner_id, LogMetrics()),
            sender_pid=connected_pid,
        )
