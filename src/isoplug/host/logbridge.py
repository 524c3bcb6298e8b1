"""The host end of every runner's log connection: records land in the host's own logging.

Each runner opens a second connection with role ``"logs"`` and its own log token, to a
listener of the bridge's own. The token alone proves nothing: it stays in the memory of the
runner and of every process it starts (they reconnect with it), where a process that can read
their memory could take it. So the handshake also asks the kernel who connected
(``SO_PEERCRED``) and refuses any pid that is not the runner's own (:mod:`isoplug.host.lineage`:
by its parents first, so that a process of another runner's that joined this one's process
group is that other runner's); a refusal names that pid and the tree it belongs to. The same
kernel's word, asked before a byte is read, gives a runner's family handshake places of its
own, which strangers cannot hold (:mod:`isoplug.rpc.gate`). A runner and the processes it
started may hold at most ``max_log_connections`` log connections at once (a host thread each):
past it their new ones wait, unread and with no thread, for a place (up to
``max_waiting_log_connections``), and past that are refused, with a warning naming the runner
whose tree the connecting process is in, at most once per report interval; other runners keep
theirs (:mod:`isoplug.host.log_places`). Orphans that only their process group places in the
runner's tree (which a process of another runner's could also be, see
:mod:`isoplug.host.lineage`) hold as many places again, apart: filling those keeps out none of
the runner's own processes. Each log
connection is served by a thread that sleeps in ``recv()`` and replays every batch with a
:class:`~isoplug.logs.LogReplayer` the moment it lands (see :mod:`isoplug.logs.session`). So
the host's event loop never runs a logging handler for a plugin, and a slow handler (a file, a
network logger) holds back only that runner's logging, through the socket, not the host:

- a runner that hosts one plugin ``p`` has every record put under ``plugin.p`` (its root
  logger is ``plugin.p`` itself; its ``plugin.p.x`` stays ``plugin.p.x``);
- a runner that hosts a group routes each member's ``plugin.<member>...`` loggers to that
  member, and anything else to ``plugin.<group>``;
- every record carries ``plugin_id`` and ``runner_pid``, set here from the manifest and the
  runner the host started (a process the runner forked, which connects with its token, has its
  runner's: its own pid is the record's ``process``, the kernel's view of the socket,
  ``SO_PEERCRED``), overriding anything the runner sent.

Metrics are kept per runner across restarts, so a crash loop does not reset them; what the
bridge keeps per runner is dropped when the runner is gone for good
(:mod:`isoplug.host.runner_logs`). Each connection counts in metrics of its own, updated by its
thread alone, and a runner's are summed when asked for: two threads adding to one counter could
lose counts.

A runner's fd-level stdout/stderr output (read from its pipes by host threads, see
:mod:`isoplug.host.stdio`) goes through a replayer of the bridge's too
(:meth:`LogBridge.stdio_destination`): the runner's identity, its shared rate limit, and
metrics of its own, summed with its connections'.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from isoplug.control import LOGS_ROLE
from isoplug.host.lineage import Lineage, TreeMarks, kinship_known, lineage_of
from isoplug.host.log_places import (
    BY_GROUP,
    DEFAULT_MAX_LOG_CONNECTIONS,
    DEFAULT_MAX_WAITING_LOG_CONNECTIONS,
    DEFAULT_MAX_WAITING_LOG_CONNECTIONS_IN_ALL,
    LogPlaces,
)
from isoplug.host.runner_logs import RunnerLogState, RunnerLogStates
from isoplug.host.stdio_replay import StdioDestination
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.log_guard import guarded_logger
from isoplug.logs import LogMetrics, LogReplayer, ReplayLimits
from isoplug.logs.chains import SenderChains
from isoplug.logs.gil import HOST_SHARE
from isoplug.logs.handler_errors import HandlerErrors
from isoplug.logs.report_throttle import ReportThrottle, report_refusal
from isoplug.logs.ring_budget import DEFAULT_MAX_RINGS, RingBudget, tree_share
from isoplug.logs.session import replay_until_closed
from isoplug.rpc.blocking import BlockingChannel, BlockingServer, serve_blocking
from isoplug.rpc.gate import DEFAULT_HELLO_TIMEOUT, DEFAULT_MAX_HANDSHAKES
from isoplug.transport.process_tree import stat_fields
from isoplug.transport.stream import PeerCredentials, peer_credentials_of
from isoplug.wire import Hello
from isoplug.wire.sanitize import clean_quoted

__all__ = ["LogBridge"]

_log = guarded_logger("isoplug.host")

#: Cap for a name or role from a hello (unauthenticated peer text) quoted in a record.
_MAX_HELLO_CHARS = 200
#: How the bound on the runners' rings is set (SupervisorConfig), for its warnings.
_MAX_RINGS_SETTING = "max_log_rings"

#: How long closing the bridge waits for log connections to end by themselves (their runners
#: have stopped by then: this is for processes a runner forked, still logging).
DRAIN_TIMEOUT = 5.0
#: How long closing the bridge then waits for the pending ends' watcher thread to end (see
#: isoplug.logs.pending_ends): it ends at once unless it was replaying an end's records.
PENDING_WATCHER_WAIT = 1.0

_KINSHIP_KNOWN = kinship_known()


class LogBridge:
    """Serves the log connections of every runner of one host.

    ``supervisors`` are the host's runners by id (read as they change): a connection's hello
    names one (no such runner: refused).
    """

    def __init__(
        self,
        supervisors: Mapping[str, RunnerSupervisor],
        limits: ReplayLimits | None = None,
    ) -> None:
        self.limits = limits or ReplayLimits()
        self._supervisors = supervisors
        self._supervisor_named = supervisors.get
        # Host handlers that raise on plugin records: reported on the host's logger, once for
        # all runners (isoplug.logs.handler_errors).
        self._handler_errors = HandlerErrors(_log, self.limits.report_interval)
        # Which of a reconnected sender's records a recovery replayed already (made again by
        # open(), its pending ends bounded per runner then).
        self._chains = SenderChains()
        self._refusals = ReportThrottle(self.limits.report_interval, timer=True)
        #: What each runner's connections share, by runner id.
        self.runners = RunnerLogStates(supervisors, self.limits)
        #: Every runner pid stamped on records (``runner_pid``), added before the first such
        #: record is replayed: whose records they are, when several hosts share the loggers.
        self.runner_pids: set[int] = set()
        self._server: BlockingServer | None = None
        #: The server until it is closed: close_now() stops it while close() drains it.
        self._listening: BlockingServer | None = None
        self._taking = threading.Lock()  # one close() of two threads closes the server
        self._places: LogPlaces | None = None
        #: The replayers of the log connections open now; stopped when the drain time is up,
        #: so nothing is replayed after the close (what is left is counted receiver_closed).
        self._replaying: set[LogReplayer] = set()
        self._drained = False
        # The runners' rings held at once, all runners together (set again by open()).
        self._ring_budget = RingBudget(DEFAULT_MAX_RINGS, _MAX_RINGS_SETTING)

    @property
    def address(self) -> str:
        """Where runners open their log connection (once :meth:`open`)."""
        assert self._server is not None, "the log bridge is not open"
        return str(self._server.address)

    def open(
        self,
        handshake_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        max_log_connections: int = DEFAULT_MAX_LOG_CONNECTIONS,
        max_waiting_log_connections: int = DEFAULT_MAX_WAITING_LOG_CONNECTIONS,
        max_waiting_log_connections_in_all: int = DEFAULT_MAX_WAITING_LOG_CONNECTIONS_IN_ALL,
        *,
        max_log_rings: int = DEFAULT_MAX_RINGS,
    ) -> None:
        """Listen on a fresh private unix socket; connections are served by threads (what
        a connection gets before it authenticates: see :func:`~isoplug.rpc.serve_blocking`),
        at most ``max_log_connections`` at once per runner (its descendants included), past
        which at most ``max_waiting_log_connections`` of the runner's wait for a place
        (``max_waiting_log_connections_in_all`` for every runner together; see
        :mod:`isoplug.host.log_places`); at most ``max_log_rings`` of their shared-memory
        rings kept at once, all runners together, and ``max_log_connections`` of one runner's
        (its connections' and their ends pending together: see
        :mod:`isoplug.logs.ring_budget`)."""
        # A runner's processes keep as many rings, and pending ends, as they have log
        # connection places: a plugin dropping its connections while its process lives on
        # held every ring of the host so, and denied the other runners their recovery.
        self._ring_budget = RingBudget(
            max_log_rings,
            _MAX_RINGS_SETTING,
            max_per_tree=tree_share(
                max_log_connections, max_waiting_log_connections, max_log_rings
            ),
            per_tree_setting=(
                "its places and waiting room, max_log_connections + "
                "max_waiting_log_connections, at most half of max_log_rings"
            ),
        )
        self._chains = SenderChains(max_pending_per_tree=max_log_connections)
        # Its waiting room serves one listener: the bridge is opened once.
        self._places = LogPlaces(
            self.runners,
            self._client_of,
            max_log_connections,
            max_waiting_log_connections,
            max_waiting_log_connections_in_all,
        )
        self._server = self._listening = serve_blocking(
            "unix:",
            self._expected_token,
            self._serve,
            name="isoplug-host-logs",
            admit=self._admit,
            kinship=self._family_of if _KINSHIP_KNOWN else None,
            client_limit=self._places.limit,
            handshake_timeout=handshake_timeout,
            max_handshakes=max_handshakes,
            # A runner's ledger, passed with its hello: readable however soon it dies.
            takes_descriptors=True,
        )

    def listen_again_if_lost(self) -> str | None:
        """Listen again (at the same path if it can be made again) when the listener's folder
        was deleted; return what was lost, None when nothing was or the bridge is closed (see
        :meth:`~isoplug.rpc.blocking.BlockingServer.listen_again_if_lost`)."""
        server = self._server
        return None if server is None else server.listen_again_if_lost()

    def close(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait up to ``drain_timeout`` for log connections to end, replaying what they still
        send, then close the rest and the listener. Blocks: call it off the event loop."""
        with self._taking:
            server, self._server = self._server, None
        if server is None:
            return
        still_open = server.wait_idle(drain_timeout)
        if still_open:
            _log.warning(
                "%d log connection(s) still open %.1f s after their runners stopped; closing them",
                still_open,
                drain_timeout,
            )
        self._stop_replaying()
        # Processes that closed their log connection and did not come back: accounted now.
        self._chains.pending.close()
        # The connections still waiting for a place are closed with it, unread: their
        # processes outlived the drain (one that ended was let in), and must not hold the close.
        server.close()
        said = None if self._places is None else self._places.closed_unread()
        if said is not None:
            _log.warning(said)
        # Its watcher thread may be accounting for an end it took just before: it closes its
        # wake pipe as it ends, within this (or, slower, on its own later).
        self._chains.pending.wait_closed(PENDING_WATCHER_WAIT)
        self.runners.close()  # the summaries still pending
        self._handler_errors.close()
        self._refusals.close()
        self._listening = None

    def _stop_replaying(self) -> None:
        with self._taking:
            self._drained = True
            replaying = list(self._replaying)
        for replayer in replaying:
            replayer.stop()

    def close_now(self) -> None:
        """Stop listening at once, waiting for nothing (the host's close cannot wait any more:
        it was cancelled): the socket is closed, its directory removed. The rest of
        :meth:`close` (replaying what the open connections still send) goes on in a thread of
        its own, unless under way already. Idempotent."""
        listening = self._listening
        if listening is None:
            return
        listening.stop_accepting()
        if self._server is not None:
            threading.Thread(target=self.close, name="isoplug-log-bridge-close").start()

    def metrics(self, runner_id: str) -> LogMetrics:
        """A snapshot of the log metrics of one runner (all its connections so far)."""
        return self.runners.metrics(runner_id)

    def stdio_destination(self, supervisor: RunnerSupervisor, runner_pid: int) -> StdioDestination:
        """Where the stdout/stderr output of the runner process ``runner_pid`` goes: the
        records land on ``plugin.<runner id>.stdout`` / ``.stderr`` (for a group, the group's
        id: fd-level output cannot be told apart by member), stamped with the runner's identity,
        under the runner's shared rate limit, counted in its metrics."""
        runner_id = supervisor.runner_id
        runner = self.runners.get(runner_id)
        metrics = runner.for_connection()
        self.runner_pids.add(runner_pid)
        replayer = LogReplayer(
            f"plugin.{runner_id}",
            identity={"plugin_id": runner_id, "runner_pid": runner_pid},
            limits=self.limits,
            description=f"plugin {runner_id}",
            metrics=metrics,
            rate_bucket=runner.rate_bucket,
            report_throttle=runner.reports,
            logger_budget=runner.logger_budget,
            handler_errors=self._handler_errors,
        )
        return StdioDestination(replayer, lambda: runner.connection_ended(metrics))

    def open_connections(self, runner_id: str) -> int:
        """Log connections of ``runner_id`` (and the processes it started) open now, its
        orphans' counted by their process group included."""
        assert self._server is not None, "the log bridge is not open"
        return self._server.client_connections(runner_id) + self._server.client_connections(
            runner_id + BY_GROUP
        )

    def _lineage(self, pid: int) -> Lineage | None:
        """The runner whose tree ``pid`` is in, and what says so, by the kernel's word."""
        # A copy taken at once: the event loop's thread adds and removes runners meanwhile.
        supervisors = tuple(self._supervisors.values())
        runners = {s.pid: s.runner_id for s in supervisors if s.pid is not None}

        def marks() -> dict[str, TreeMarks]:
            found = {s.runner_id: s.tree_marks() for s in supervisors}
            return {runner: mark for runner, mark in found.items() if mark is not None}

        return lineage_of(pid, runners, marks)

    def _family_of(self, pid: int) -> str | None:
        """The client whose places a connection from ``pid`` takes: the runner whose tree it
        is in, or that runner's orphans counted by their group. Asked of every connection
        before a byte of it is read (in the listener's accepting thread)."""
        lineage = self._lineage(pid)
        if lineage is None:
            return None
        return lineage.runner + BY_GROUP if lineage.by_group else lineage.runner

    def _client_of(self, hello: Hello, credentials: PeerCredentials | None) -> str:
        """Whose places an admitted log connection holds (the handshake checked that its
        process is in the tree of the runner its hello names)."""
        if credentials is not None and _KINSHIP_KNOWN:
            orphans = hello.name + BY_GROUP
            if self._family_of(credentials.pid) == orphans:
                return orphans
        return hello.name

    def _expected_token(self, hello: Hello) -> str | None:
        if hello.role != LOGS_ROLE:
            report_refusal(
                self._refusals,
                f"refused a {clean_quoted(hello.role, _MAX_HELLO_CHARS)} connection from runner "
                f"{clean_quoted(hello.name, _MAX_HELLO_CHARS)} on the log listener",
                _log.warning,
            )
            return None
        supervisor = self._supervisor_named(hello.name)
        return supervisor.expected_log_token() if supervisor is not None else None

    def _admit(self, hello: Hello, credentials: PeerCredentials | None) -> str | None:
        """Why a log connection whose token matched is refused (None: welcome): the kernel
        must say it comes from the runner or a process the runner started. The refusal is
        logged by the listener (``isoplug.rpc``), with that pid."""
        supervisor = self._supervisor_named(hello.name)
        runner_pid = None if supervisor is None else supervisor.pid
        if supervisor is None or runner_pid is None:
            return f"runner {clean_quoted(hello.name, _MAX_HELLO_CHARS)} has no process running"
        if credentials is None:
            return None  # no peer credentials (not Linux): the token alone, as documented
        if credentials.pid == runner_pid:
            return None
        if not _KINSHIP_KNOWN:
            return (
                f"runner {supervisor.runner_id}: pid {credentials.pid} is not the runner "
                f"(pid {runner_pid}), and without /proc its descendants cannot be told"
            )
        lineage = self._lineage(credentials.pid)
        if lineage is not None and lineage.runner == supervisor.runner_id:
            return None
        if lineage is None and stat_fields(credentials.pid) is None:
            # Ended since its accept (served from the waiting room as it hung up, or just
            # slow to be read): the listener's word on it then, while it was sure to be that
            # process, is the only one left; its pid may name another by now.
            accepted = credentials.family
            if accepted is not None and accepted.removesuffix(BY_GROUP) == supervisor.runner_id:
                return None
        whose = "in no runner's tree" if lineage is None else str(lineage)
        return (
            f"runner {supervisor.runner_id}: pid {credentials.pid} is neither the runner "
            f"(pid {runner_pid}) nor a process it started: it is {whose}"
        )

    def _serve(self, channel: BlockingChannel) -> None:
        """Own one runner's log connection until it closes (in the connection's thread)."""
        hello = channel.connection.peer_hello
        assert hello is not None
        supervisor = self._supervisor_named(hello.name)
        if supervisor is None:
            return  # the handshake refuses unknown runners; this one was removed meanwhile
        credentials = peer_credentials_of(channel.socket)
        expected_pid = supervisor.pid
        connected_pid = credentials.pid if credentials is not None else expected_pid
        # The runner's, for a process it started too: its records say whose runner they came
        # from, and ``process`` (the kernel's word, see _replayer) which process wrote them.
        runner_pid = expected_pid if expected_pid is not None else connected_pid
        own_connection = connected_pid == expected_pid
        # Taken once: the runner may be removed for good while this connection lasts, and its
        # accounting must end in the state it began in.
        runner = self.runners.get(supervisor.runner_id)
        if credentials is not None and expected_pid is not None and credentials.pid != expected_pid:
            # A process the runner started (the handshake checked), reusing its token: keep its
            # records (nothing is dropped silently) but say whose they are. A plugin that forks
            # a pool says so once per interval, not once per child.
            text = (
                f"runner {supervisor.runner_id}: log connection from pid {credentials.pid}, a "
                f"descendant of runner pid {expected_pid}"
            )
            runner.reports.report(
                "descendant_connection",
                text,
                summary=lambda tally: (
                    f"runner {supervisor.runner_id}: {tally.events} more log connection(s) from "
                    f"its descendants in the last {tally.seconds:.0f} s (the latest: "
                    f"{tally.detail})"
                ),
                emit=_log.info,
                detail=f"pid {credentials.pid}",
            )
        # Its stderr records are its last words when it dies early (isoplug.host.stderr_tail);
        # an account waits for the runner's own connections, not for its descendants'.
        tail = supervisor.stderr_tail()
        own = tail if own_connection else None
        if own is not None:
            own.feed_opened()
        replayer = self._replayer(
            supervisor,
            runner,
            runner_pid,
            credentials.pid if credentials is not None else None,
            None if tail is None else tail.add,
        )
        with self._taking:
            self._replaying.add(replayer)
            if self._drained:
                replayer.stop()
        clean = False
        try:
            clean = replay_until_closed(
                channel, replayer, f"runner {supervisor.runner_id}", gil=HOST_SHARE
            )
        finally:
            # When the runner itself dies, its supervisor reports how (exit code, signal); a
            # second warning from here would only repeat it. A process the runner forked has
            # no supervisor, so its abrupt end is reported here.

            with self._taking:
                self._replaying.discard(replayer)

            def ended() -> None:
                runner.connection_ended(replayer.metrics)
                if own is not None:
                    own.feed_ended()

            # A process that lives on after its connection ended without a goodbye (it
            # closed the socket's descriptor): its accounting waits until it reconnects or
            # exits (isoplug.logs.pending_ends).
            reported_clean = clean or own_connection
            if clean or not replayer.finish_when_settled(clean=reported_clean, then=ended):
                replayer.finish(clean=reported_clean)
                ended()

    def _replayer(
        self,
        supervisor: RunnerSupervisor,
        runner: RunnerLogState,
        runner_pid: int | None,
        connected_pid: int | None,
        on_stderr: Callable[[str, float], None] | None,
    ) -> LogReplayer:
        """``connected_pid`` is the pid the socket vouches for (None when it cannot say);
        ``on_stderr`` is told the connection's stderr lines."""
        runner_id = supervisor.runner_id
        members = list(supervisor.manifests)
        identity: dict[str, Any] = {"runner_pid": runner_pid}
        if runner_pid is not None:
            self.runner_pids.add(runner_pid)
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
            metrics=runner.for_connection(),
            rate_bucket=runner.rate_bucket,
            report_throttle=runner.reports,
            logger_budget=runner.logger_budget,
            handler_errors=self._handler_errors,
            sender_pid=connected_pid,
            chains=self._chains,
            on_stderr=on_stderr,
            transit_losses=runner.transit_losses,
            ring_budget=self._ring_budget,
            # Its orphans counted by their group too: one runner's rings count together,
            # whichever of its places their connections hold.
            sender_tree=f"runner {runner_id}'s process tree",
            # The runner and its children have their levels from the host already.
            tell_level=False,
        )
