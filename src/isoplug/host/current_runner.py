"""What a supervisor tells of its current runner process: its pid, tokens, descendants' marks,
stderr tail, where its setup waits, and each plugin's :class:`~isoplug.host.status.PluginInfo`
(the reading half of :class:`~isoplug.host.supervisor.RunnerSupervisor`, as
:mod:`isoplug.host.plugin_calls` is its calling half)."""

from __future__ import annotations

import asyncio

from isoplug.host.commands import Commands
from isoplug.host.lineage import TreeMarks
from isoplug.host.plugin_calls import PluginCalls
from isoplug.host.process import RunnerProcess
from isoplug.host.setup_where import setup_where
from isoplug.host.status import ExitAccount, PluginInfo, PluginState
from isoplug.host.stderr_tail import StderrTail
from isoplug.rpc import Peer

__all__ = ["CurrentRunner"]


class CurrentRunner(PluginCalls):
    """The current runner process of a supervisor, as its callers read it."""

    runner_id: str
    restarts: int
    last_exit: ExitAccount | None
    error: str | None
    setup_waited: str
    _task: asyncio.Task[None] | None
    _generation: int
    _commands: Commands
    _events_dropped: dict[str, int]

    @property
    def generation(self) -> int:
        """How many runner processes this supervisor has started."""
        return self._generation

    @property
    def stopped_by_user(self) -> bool:
        """Whether a user asked for a stop, and for no restart since: then it stays stopped
        (its plugins that could not load read STOPPED, not FAILED), and the host starts it
        again on its own for nothing (see :mod:`isoplug.host.commands`)."""
        return self._commands.user_stop_holds

    def hold_stopped(self) -> None:
        """Keep it stopped until a user's restart, as a user's stop does: the runner that
        replaces one a user stopped (a hot reload's new ``plugin.toml``)."""
        self._commands.stop_by_user()

    def end_user_stop(self) -> None:
        """End a user's stop, as a user's restart does, before that restart is asked: hot
        reload may then plan the plugin's move it held back (see RunnerSet.restart_by_user)."""
        self._commands.may_restart(by_user=True)

    @property
    def supervision(self) -> asyncio.Task[None] | None:
        """Its supervision task while it runs (None before its start, and once it ended)."""
        task = self._task
        return task if task is not None and not task.done() else None

    @property
    def pid(self) -> int | None:
        """The pid of the current runner process, if one runs."""
        return None if self._process is None else self._process.pid

    @property
    def _process(self) -> RunnerProcess | None:
        return None if self._life is None else self._life.process

    def ready_peer(self, plugin_id: str) -> Peer | None:
        """The connection of the ready runner ``plugin_id`` is loaded in (None: it is not)."""
        peer = self._peer
        if plugin_id in self.broken or self.state is not PluginState.READY:
            return None
        return peer if peer is not None and peer.is_open else None

    def expected_token(self) -> str | None:
        """The token the current runner process must present on its control connection (None
        while none is starting)."""
        return None if self._life is None else self._life.token

    def expected_log_token(self) -> str | None:
        """The token the log connections of the current runner process (and of the processes it
        starts) must present (None while none is starting)."""
        return None if self._life is None else self._life.log_token

    def tree_marks(self) -> TreeMarks | None:
        """What marks the current runner process's descendants beyond their parents (None:
        none runs); see :mod:`isoplug.host.lineage`."""
        process = self._process
        return None if process is None else TreeMarks(process.tag, process.seen_descendants)

    async def setup_where(self) -> str:
        """Where its plugins' ``setup()`` waits: asked of its runner now, while it starts (see
        :mod:`isoplug.host.setup_where`); else where it waited in the last runner killed for
        not being ready; "" when neither says."""
        life = self._life
        if self.state is PluginState.STARTING and life is not None and not life.ready.done():
            said = await setup_where(life.peer)
            if said:
                return said
        return f"when its last runner was killed: {self.setup_waited}" if self.setup_waited else ""

    def stderr_tail(self) -> StderrTail | None:
        """The last stderr lines of the current runner process (None: none is starting)."""
        return None if self._life is None else self._life.stderr_tail

    def info(self, plugin_id: str) -> PluginInfo:
        summary = self.offers.summary(plugin_id)
        broken = self.broken.get(plugin_id)
        process = self._process
        return PluginInfo(
            id=plugin_id,
            runner_id=self.runner_id,
            state=PluginState.FAILED if broken and not self.stopped_by_user else self.state,
            pid=process.pid if process is not None and process.running else None,
            restarts=self.restarts,
            last_exit=self.last_exit,
            error=broken or self.error,
            methods=summary.methods,
            events=summary.events,
            events_dropped=self._events_dropped.get(plugin_id, 0)
            + (0 if self._life is None else self._life.health.events.dropped(plugin_id)),
        )
