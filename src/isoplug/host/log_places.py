"""The log listener's places per runner (:mod:`isoplug.host.logbridge`), and the waiting room
past them: :class:`LogPlaces`.

A runner and the processes it started hold at most ``max_log_connections`` log connections
at once; its orphans that only their process group places in its tree hold as many again,
apart (a client of their own, named with :data:`BY_GROUP`). Past its places, a connection
waits, unread and with no thread, for one of them (:mod:`isoplug.rpc.waiting_room`, the
standalone receivers' room): the oldest takes the place of the runner's next connection to
end, and one whose process ends meanwhile is served at once, outside the limit. A refused one
was lost with what it logged: a plugin's fork burst (a ``multiprocessing`` pool's children,
each logging a few records and ending) past the runner's places had its children refused,
retry, and end before they were let in, their records, in the ledger each passed with its
hello, neither delivered nor counted (all 120 of a 40-child burst). At most
``max_waiting_log_connections`` wait per runner (and as many per runner's orphans by group),
``max_waiting_log_connections_in_all`` for every runner together; past either a connection is
refused as before, said with the runner's refusals, 0 refusing at once.

Both the waits and the refusals are said on the host's logger through the runner's own
reports: once per report interval, then summed up, whatever a fork pool's size.
"""

from __future__ import annotations

from collections.abc import Callable

from isoplug.host.runner_logs import RunnerLogStates
from isoplug.log_guard import guarded_logger
from isoplug.rpc.blocking import ClientLimit
from isoplug.rpc.waiting_room import WaitingRoom, full_for
from isoplug.transport.stream import PeerCredentials
from isoplug.wire import Hello

__all__ = [
    "BY_GROUP",
    "DEFAULT_MAX_LOG_CONNECTIONS",
    "DEFAULT_MAX_WAITING_LOG_CONNECTIONS",
    "DEFAULT_MAX_WAITING_LOG_CONNECTIONS_IN_ALL",
    "LogPlaces",
]

_log = guarded_logger("isoplug.host")

#: Log connections one runner and the processes it started may hold open at once (see
#: ``SupervisorConfig.max_log_connections``).
DEFAULT_MAX_LOG_CONNECTIONS = 64
#: Log connections of one runner that may wait for a place at once (its orphans by group as
#: many again), and of every runner together (``SupervisorConfig``'s settings of these names).
DEFAULT_MAX_WAITING_LOG_CONNECTIONS = 256
DEFAULT_MAX_WAITING_LOG_CONNECTIONS_IN_ALL = 512

#: Appended to a runner's id, the client (and handshake family) of its orphans that only their
#: process group places in its tree: places apart from its own processes'. A runner id has no
#: space, so no runner is named so.
BY_GROUP = " (orphans by group)"

_PER_RUNNER = "max_waiting_log_connections"
_IN_ALL = "max_waiting_log_connections_in_all"


class LogPlaces:
    """The places and the waiting room of one log listener's runners (see the module
    docstring); its :attr:`limit` is for that listener alone."""

    def __init__(
        self,
        runners: RunnerLogStates,
        client_of: Callable[[Hello, PeerCredentials | None], str],
        max_connections: int = DEFAULT_MAX_LOG_CONNECTIONS,
        max_waiting: int = DEFAULT_MAX_WAITING_LOG_CONNECTIONS,
        max_waiting_in_all: int = DEFAULT_MAX_WAITING_LOG_CONNECTIONS_IN_ALL,
    ) -> None:
        self._runners = runners
        self.max_connections = max_connections
        self.room = WaitingRoom(max_waiting, max_waiting_in_all, waits=self._waits)
        self.limit = ClientLimit(
            client_of,
            max_connections,
            self._refused,
            # Each runner's places are its own: the listener-wide limit counts only what no
            # runner holds, so runners that hold all theirs cannot keep another's out.
            own_places=True,
            waiting_room=self.room,
        )

    def closed_unread(self) -> str | None:
        """What the listener, closed, says of the connections that still waited for a place
        (None: there were none). Their processes lived on: one that ended was let in."""
        count = self.room.closed_unread
        if not count:
            return None
        return (
            f"closed {count} log connection(s) that still waited for a place of their runner "
            "(max_log_connections): the host's log listener closed before one freed, and read "
            "nothing of them; their processes, alive then, count what they lose"
        )

    def _at_limit(self, client: str) -> tuple[str, str]:
        """The runner ``client`` stands for, and the limit it is at, in words."""
        runner_id = client.removesuffix(BY_GROUP)
        count = self.max_connections
        if runner_id == client:
            return runner_id, f"at its limit of {count} open log connections"
        return runner_id, (
            f"its orphans counted by their process group are at their limit of {count} open "
            "log connections"
        )

    def _waits(self, client: str, credentials: PeerCredentials | None) -> None:
        """A log connection of ``client`` waits for one of its places."""
        runner_id, limit = self._at_limit(client)
        who = "" if credentials is None else f" from pid {credentials.pid}"
        self._runners.get(runner_id).reports.report(
            "log_connection_wait",
            f"runner {runner_id}: a log connection{who} waits for a place: {limit} (shared "
            "by the runner and the processes it started); it is served, unread until then, "
            "when one of theirs ends, or as soon as its process ends (what it logged comes "
            "from the ledger it passed with its hello): raise max_log_connections for a "
            "plugin that runs more of its processes at once",
            summary=lambda tally: (
                f"runner {runner_id}: {tally.events} more log connection(s) waited for a "
                f"place in the last {tally.seconds:.0f} s: {limit} (the latest: "
                f"{tally.detail})"
            ),
            emit=_log.warning,
            detail=who.strip() or "pid unknown",
        )

    def _refused(self, client: str, credentials: PeerCredentials | None) -> None:
        """A log connection of ``client`` (a runner, or its orphans counted by group) was
        refused: it holds all its places, and no more may wait for one. Said on the host's
        logger, naming the runner whose tree the connecting process is in (the runner's own
        reports, so at most once per interval)."""
        runner_id, limit = self._at_limit(client)
        who = "" if credentials is None else f" from pid {credentials.pid}"
        full = full_for(
            self.room, client, per_client=_PER_RUNNER, in_all=_IN_ALL, clients="runners"
        )
        cost = (
            f"{full}; it tries again, and what it logs meanwhile is lost, uncounted, if it "
            f"ends before it is let in"
        )
        if runner_id == client:
            kind = "log_connection_limit"
            text = (
                f"runner {runner_id}: refused a log connection{who}: {limit} (shared by the "
                f"runner and the processes it started), and {cost}"
            )
        else:
            kind = "orphan_connection_limit"
            text = (
                f"runner {runner_id}: refused a log connection{who}: {limit} (places apart "
                "from its own processes': orphans in its process group that nothing else "
                f"places in its tree), and {cost}"
            )
        self._runners.get(runner_id).reports.report(
            kind,
            text,
            summary=lambda tally: (
                f"runner {runner_id}: refused {tally.events} more log connection(s) in the "
                f"last {tally.seconds:.0f} s: {limit}, and {full} (the latest: {tally.detail})"
            ),
            emit=_log.warning,
            detail=who.strip() or "pid unknown",
        )
