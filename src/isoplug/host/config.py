"""Timing of supervision: how long to wait for a runner at each step of its life; and how
``Host(config=...)`` tells those settings from the plugins' configuration."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

from isoplug.host.config_check import check_overrides
from isoplug.log_guard import guarded_logger

__all__ = ["SupervisorConfig", "split_host_config"]

_log = guarded_logger("isoplug.host")


#: The shortest pause between a runner's health checks.
MIN_HEALTH_INTERVAL = 0.01
#: SupervisorConfig's settings in seconds.
_SECONDS = (
    "ready_timeout",
    "health_interval",
    "health_timeout",
    "health_grace",
    "shutdown_timeout",
    "teardown_timeout",
    "terminate_timeout",
    "stdio_drain_timeout",
    "call_timeout",
    "handshake_timeout",
)


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """Timing of supervision. The defaults suit production; tests shorten them."""

    #: Import + ``setup`` of every plugin of a runner. Generous: setup may open connections.
    ready_timeout: float = 15.0
    #: How often a ready runner's health is checked (sooner while its event loop is blocked);
    #: at least :data:`MIN_HEALTH_INTERVAL`.
    health_interval: float = 2.0
    #: How long a runner's event loop may go without running while Python could run (a
    #: plugin blocking it: ``time.sleep``, a busy loop, a lock) before the runner is killed as
    #: hung. A thread of the runner answers health checks, so this measures the loop itself:
    #: a blocked loop is noticed within about ``health_timeout`` plus a tenth of it. Time the
    #: runner was ready to run but waited for a CPU (a busy machine) is not counted, here nor
    #: in ``health_grace``.
    health_timeout: float = 2.0
    #: How much longer a runner may go silent while no thread of it can run Python: one call
    #: in C code holding the GIL (a 1 GiB allocation, a huge regex or JSON parse) stops its
    #: loop and its health thread alike. That time is not held against the loop, up to this
    #: much past ``health_timeout``; past it, or without any answer for that long, the runner
    #: is hung all the same.
    health_grace: float = 10.0
    #: A sync plugin method runs in a worker thread, which a call that timed out (or that its
    #: caller cancelled) cannot stop.
    #: Past this many such threads still running, the runner is recycled (stopped gracefully
    #: and restarted); its pool keeps as many threads to spare meanwhile.
    max_stuck_threads: int = 3
    #: Teardown hooks get ``teardown_timeout`` inside the runner; this adds room for goodbye.
    #: Not above ``teardown_timeout``, the host's SIGTERM comes first (warned about).
    shutdown_timeout: float = 5.0
    teardown_timeout: float = 3.0
    #: Python exits promptly on SIGTERM unless a plugin handles it; then SIGKILL.
    terminate_timeout: float = 2.0
    #: After a runner exited, how long processes its plugins started may keep its stdout and
    #: stderr open (what they write there is read, as the runner's) before they are killed
    #: with the rest of its process group; its exit account and restart wait for it. Without
    #: such processes the pipes end within milliseconds of the exit.
    stdio_drain_timeout: float = 2.0
    #: Default timeout of ``Host.call``.
    call_timeout: float = 30.0
    #: Calls of ``async def`` methods a runner runs at once (for all its plugins); past it,
    #: calls wait in the runner's queue, up to ``max_queued_calls``, and start as running ones
    #: end; past that, a call fails at once with :class:`~isoplug.errors.PluginBusy`. The
    #: runner reads its connection all along: cancels, a shutdown and new calls are never
    #: stuck behind work. A cancelled or timed-out queued call is taken out at once.
    max_concurrent_calls: int = 256
    max_queued_calls: int = 1024
    #: Events that may wait for one plugin's handlers (``Host.publish`` does not wait for
    #: them); past it, events for that plugin are dropped, counted and warned about.
    max_queued_events: int = 1024
    #: Bytes of events (encoded, as sent) that may wait for one plugin's handlers in its
    #: runner, and that may wait unsent on the host's connection to a runner (which reads it
    #: more slowly than ``Host.publish`` writes); past either, new events are dropped as past
    #: ``max_queued_events``. Without it, 150 events of 8 MiB held 1.2 GiB in the host and
    #: again in the runner, far below the count. A call waits behind at most this much event
    #: data on the connection.
    max_queued_event_bytes: int = 64 * 2**20
    #: The level of every plugin (a level name), over its manifest's ``log_level``; None: each
    #: manifest's. ``Host.set_log_level`` overrides both for one plugin.
    log_level: str | None = None
    #: A runner's hello follows its connect within milliseconds; a connection that has not
    #: authenticated within this (silent, or trickling bytes) is closed, on both listeners.
    handshake_timeout: float = 5.0
    #: Connections waiting to authenticate at once, per listener; past it, new ones are
    #: refused at once (see :mod:`isoplug.rpc.gate`). A runner's own connections (the kernel
    #: says which) have as many places of their own: strangers holding every place cannot
    #: keep a runner from connecting.
    max_handshakes: int = 128
    #: Log connections a runner and the processes it started may hold open at once (a thread
    #: of the host each); past it, their new ones wait for a place (next two settings), and
    #: other runners are not affected. A plugin that forks a pool of workers has one per
    #: worker that logs. It also bounds the runner's log rings, open connections and ends
    #: pending together, and its pending ends (see ``max_log_rings``).
    max_log_connections: int = 64
    #: Log connections of a runner (and as many of its orphans counted by their process
    #: group) that may wait, unread and with no thread, for one of its ``max_log_connections``
    #: places: the oldest takes the next place that frees, and one whose process ends is
    #: served at once, so that a fork burst's children lose nothing. Past it, or past
    #: ``max_waiting_log_connections_in_all`` for every runner together, a new one is
    #: refused, with a warning naming the runner: what its process logs until it is let in is
    #: lost if it ends first. 0: refused at once (see :mod:`isoplug.host.log_places`).
    max_waiting_log_connections: int = 256
    max_waiting_log_connections_in_all: int = 512
    #: Shared-memory log rings (each at most 4 MiB: what a crash of a process leaves unsent,
    #: read back at its end) the host keeps at once, for every runner and the processes they
    #: started together; past it, a new connection's ring is not kept: its records still
    #: arrive, what a crash leaves unsent is counted lost instead of recovered, with a
    #: warning naming the runner (see :mod:`isoplug.logs.ring_budget`). One runner's
    #: processes keep at most ``max_log_connections`` of them, their connections' ends
    #: pending included: a plugin that drops its connections while it lives is refused its
    #: own rings, never another runner's. 0: none kept.
    max_log_rings: int = 256
    #: How far below the host each runner runs on the CPU: added to the nice value of the
    #: runner's threads (at most 19), which also run ``SCHED_BATCH``, so that plugins that
    #: want every core cannot starve the host's event loop and log replay (see
    #: :mod:`isoplug.runner.priority` and docs/operations.md, "CPU priority"). The runner
    #: lowers itself: the host needs no privilege and keeps its own priority. 0 opts out:
    #: runners compete with the host as equals.
    runner_nice: int = 19
    #: What runners get of the host's environment beyond the basics a Python program needs
    #: (see :mod:`isoplug.host.environment`): names or ``fnmatch`` patterns
    #: (``("HTTPS_PROXY", "MYAPP_*")``), added to each plugin's ``inherit_environment``;
    #: ``True`` passes the whole environment to every runner (secrets included).
    inherit_environment: tuple[str, ...] | bool = ()

    def __post_init__(self) -> None:
        for name in _SECONDS:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                # A NaN makes every deadline comparison false: a runner never hung, never late.
                raise ValueError(
                    f"SupervisorConfig: {name} must be a finite number of seconds, 0 or more, "
                    f"not {value!r}"
                )
        if self.shutdown_timeout <= self.teardown_timeout:
            # Not refused: teardown_timeout also bounds the stops the host does not time (a
            # SIGTERM from outside, a failed setup), and a short shutdown_timeout may be meant.
            _log.warning(
                "SupervisorConfig: shutdown_timeout (%g s) is not above teardown_timeout "
                "(%g s): the host sends SIGTERM to a runner it stops before the runner's own "
                "teardown timeout ends what its plugins left running (teardown(), tasks, "
                "threads, atexit hooks) and names it; give shutdown_timeout a few seconds more "
                "than teardown_timeout (the defaults: 5 s and 3 s)",
                self.shutdown_timeout,
                self.teardown_timeout,
            )
        if self.health_interval < MIN_HEALTH_INTERVAL:
            # 0 would ask every runner without a pause: a core of the host's spent on it.
            raise ValueError(
                f"SupervisorConfig: health_interval must be at least {MIN_HEALTH_INTERVAL} s, "
                f"not {self.health_interval!r}"
            )
        if self.max_log_connections < 1:
            raise ValueError(
                f"max_log_connections must be at least 1, not {self.max_log_connections!r}"
            )
        for name in (
            "max_concurrent_calls",
            "max_queued_calls",
            "max_queued_events",
            "max_queued_event_bytes",
            "max_waiting_log_connections",
            "max_waiting_log_connections_in_all",
            "max_log_rings",
        ):
            value = getattr(self, name)
            least = 1 if name == "max_concurrent_calls" else 0
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, not {value!r}")
        if not 0 <= self.runner_nice <= 19:
            raise ValueError(f"runner_nice must be 0 to 19, not {self.runner_nice!r}")
        if self.log_level is not None and not (
            isinstance(self.log_level, str)
            and isinstance(logging.getLevelName(self.log_level.upper()), int)
        ):
            raise ValueError(
                f"SupervisorConfig: log_level must name a level ({LEVEL_NAMES}), not "
                f"{self.log_level!r}"
            )


def split_host_config(
    config: SupervisorConfig | Mapping[str, Mapping[str, Any]] | None,
    plugin_config: Mapping[str, Mapping[str, Any]] | None,
    *,
    owner: str = "Host",
    settings_form: str = "SupervisorConfig({})",
) -> tuple[SupervisorConfig, dict[str, dict[str, Any]] | None]:
    """``Host(config=..., plugin_config=...)`` as the host's settings and the plugins'
    configuration: ``config`` may be either (``Host(config={"greeter": {...}})`` gives the
    plugins' configuration by plugin id), but the plugins' configuration is given once.
    ``owner`` names what was given them in messages; ``settings_form`` is how its settings
    are written there (``{}``: the settings given in a mapping by mistake).

    Raises :class:`TypeError` for a ``config`` that is neither (it was read attribute by
    attribute later, a raw ``AttributeError``) and for a ``plugin_config`` that is no mapping of
    plugin ids; :class:`~isoplug.errors.ConfigInvalid` /
    :class:`~isoplug.errors.UnencodableValue` for a plugin's table a runner cannot take (see
    :func:`~isoplug.host.config_check.check_overrides`). Checked here, where a host or a
    harness is made, so that a harness names the mistake before it starts anything."""
    if config is not None and not isinstance(config, SupervisorConfig | Mapping):
        raise TypeError(
            f"{owner}(config=...) must be a SupervisorConfig (or a mapping of plugin ids to "
            f"configuration tables), got {type(config).__name__} {config!r:.60}"
        )
    if isinstance(config, Mapping):
        settings = [
            key
            for key, value in config.items()
            if key in _FIELD_NAMES and not isinstance(value, Mapping)
        ]
        if settings:
            # A newcomer's Host(config={"call_timeout": 5}): not a plugin named call_timeout.
            example = ", ".join(f"{key}={config[key]!r}" for key in settings)
            raise TypeError(
                f"{owner}(config=...): {', '.join(map(repr, settings))} is a setting of "
                f"SupervisorConfig: pass config={settings_form.format(example)}; a mapping "
                "there is the plugins' configuration, a table per plugin id"
            )
        if plugin_config is not None:
            raise TypeError(
                f"{owner}(): give the plugins' configuration once, as config={{id: table}} or "
                "as plugin_config={id: table}, not both"
            )
        return SupervisorConfig(), checked_plugin_config(config, owner, "config")
    plugins = checked_plugin_config(plugin_config, owner, "plugin_config")
    return config or SupervisorConfig(), plugins


def checked_plugin_config(
    plugin_config: object, owner: str, option: str
) -> dict[str, dict[str, Any]] | None:
    """``plugin_config`` (None, or a mapping of plugin ids to configuration tables), each
    table checked as the host sends it (see :func:`split_host_config`)."""
    if plugin_config is None:
        return None
    if not isinstance(plugin_config, Mapping):
        raise TypeError(
            f"{owner}({option}=...) must be a mapping of plugin ids to configuration tables "
            f'({option}={{"greeter": {{"greeting": "Hi"}}}}), got '
            f"{type(plugin_config).__name__} {plugin_config!r:.60}"
        )
    for plugin_id in plugin_config:
        if not isinstance(plugin_id, str):
            raise TypeError(
                f"{owner}({option}=...): its keys are plugin ids (strings), but one is "
                f"{type(plugin_id).__name__} {plugin_id!r:.60}"
            )
    return {
        plugin_id: check_overrides(plugin_id, table) for plugin_id, table in plugin_config.items()
    }


_FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(SupervisorConfig))
#: The standard level names, for messages.
LEVEL_NAMES = "DEBUG, INFO, WARNING, ERROR, CRITICAL, or one given to logging.addLevelName"
