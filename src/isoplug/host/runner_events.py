"""The events of one runner process, per plugin: those the host sent, and what the runner said
became of them.

``Host.publish`` does not wait for the plugins, so an event may never reach a handler: the
runner drops it (its plugin's queue full, or still queued at a stop: the runner counts those
and says them), or it ends before it read the event (a stop or restart under way when the
event was sent, a crash). The host counts what it sent each plugin; the runner tells how many
its handlers took and how many it dropped (every health report, and its last word at a stop:
:class:`~isoplug.control.EventCounts`). Once the process ended, every event sent that no
handler took counts as dropped (``PluginInfo.events_dropped``): those the runner did not count
are said here, in a WARNING. After a stop, the runner's last word makes that exact; a runner
that ended without it (a crash, a kill) is counted from its last health report, so an event
handled after that report counts as not delivered too, and the WARNING says so.

Counts told by the runner are its plugins' word (a plugin could forge them): each is kept
within what the host sent that plugin, so a forged count can hide the plugin's own drops but
never make up others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from isoplug.log_guard import guarded_logger

__all__ = ["RunnerEvents"]

_log = guarded_logger("isoplug.host")


class RunnerEvents:
    """The events of one runner process (see the module docstring)."""

    __slots__ = ("_dropped", "_handled", "_sent", "confirmed")

    def __init__(self) -> None:
        self._sent: dict[str, int] = {}
        self._handled: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        #: The runner's last word came: its counts are final.
        self.confirmed = False

    def note_sent(self, plugin_ids: Iterable[str]) -> None:
        """One event was handed to the runner for each of ``plugin_ids`` (its subscribers)."""
        sent = self._sent
        for plugin_id in plugin_ids:
            sent[plugin_id] = sent.get(plugin_id, 0) + 1

    def note_told(
        self, dropped: Mapping[str, int], handled: Mapping[str, int], *, final: bool = False
    ) -> None:
        """What the runner told of its plugins' events so far (a health report, or with
        ``final`` its last word): each count kept as the highest told, a counter never going
        back, and only for the plugins the host sent events to."""
        for told, kept in ((dropped, self._dropped), (handled, self._handled)):
            for plugin_id, count in told.items():
                sent = self._sent.get(plugin_id)
                if sent is not None and isinstance(count, int):
                    kept[plugin_id] = min(sent, max(count, kept.get(plugin_id, 0)))
        if final:
            self.confirmed = True

    def dropped(self, plugin_id: str) -> int:
        """The events of ``plugin_id`` the runner said it dropped so far."""
        return self._dropped.get(plugin_id, 0)

    def settle(self, runner_id: str) -> dict[str, int]:
        """The runner process ended: the events each plugin did not get (plugin id -> count,
        those at 0 left out), with a WARNING for those the runner did not count itself. From
        now on they are the caller's: this process's counts start again at 0 (they are not
        added twice to those of the runners before it)."""
        counts: dict[str, int] = {}
        for plugin_id, sent in self._sent.items():
            told = self._dropped.get(plugin_id, 0)
            lost = max(told, sent - self._handled.get(plugin_id, 0))
            if lost > told:
                _warn_unsaid(plugin_id, runner_id, lost - told, confirmed=self.confirmed)
            if lost:
                counts[plugin_id] = lost
        self._sent, self._handled, self._dropped = {}, {}, {}
        return counts


def _warn_unsaid(plugin_id: str, runner_id: str, count: int, *, confirmed: bool) -> None:
    if confirmed:
        why = "its runner was stopping: they came too late for its handlers"
    else:
        # Its handlers may have taken some since its last report: counted all the same, as
        # the host cannot know (an event counted twice beats one lost unsaid).
        why = (
            "its runner ended without saying which it handled (counted from its last health "
            "report: some may have been handled after it)"
        )
    _log.warning(
        "plugin %r: %d event(s) sent to runner %s were not delivered: %s",
        plugin_id,
        count,
        runner_id,
        why,
    )
