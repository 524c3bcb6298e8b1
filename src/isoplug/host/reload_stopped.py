"""What hot reload says of a runner a user's stop (``host.stop()``) concerns: kept stopped
across a replacement or a rename, or started by the user's restart under way. A user's stop
is of the plugin in its folder: a new ``id`` in its ``plugin.toml`` does not end it.

Plugin ids are a manifest's, checked to be letters, digits, ``_`` and ``-``: nothing in them
to escape.
"""

from __future__ import annotations

from collections.abc import Mapping

from isoplug.host.registry import RunnerPlan
from isoplug.log_guard import guarded_logger

__all__ = [
    "say_kept_stopped",
    "say_renamed_started",
    "say_renamed_stopped",
    "say_started_by_restart",
]

_log = guarded_logger("isoplug.host")


def say_renamed_stopped(new: RunnerPlan, renamed: Mapping[str, str]) -> bool:
    """Log, for each plugin of ``new`` renamed while a user's stop held it (``renamed``: new
    id -> old), that it stays stopped under its new id, and how to start it; whether there
    was one."""
    ids = [manifest.id for manifest in new.manifests if manifest.id in renamed]
    for plugin_id in ids:
        _log.info(
            "reload: plugin %s was renamed %s and stays stopped (it was stopped with "
            "host.stop()): restart it with host.restart(%r)",
            renamed[plugin_id],
            plugin_id,
            plugin_id,
        )
    return bool(ids)


def say_kept_stopped(new: RunnerPlan, renamed: Mapping[str, str]) -> None:
    """``new`` replaces a stopped runner, and is not started."""
    _log.info("reload: runner %s was stopped, and stays so until restarted", new.runner_id)
    say_renamed_stopped(new, renamed)


def say_renamed_started(new: RunnerPlan, renamed: Mapping[str, str]) -> None:
    """``new`` replaced a running runner and started, with plugins renamed while stopped: a
    runner is one process, so they run. Said, so that no stop is undone unseen."""
    for manifest in new.manifests:
        if (old := renamed.get(manifest.id)) is not None:
            _log.warning(
                "reload: plugin %s was renamed %s, which joins runner %s, running: it starts "
                "there, although %s was stopped with host.stop() (a runner is one process)",
                old,
                manifest.id,
                new.runner_id,
                old,
            )


def say_started_by_restart(runner_id: str, plugin_id: str) -> None:
    """Runner ``runner_id`` replaced a stopped one while a user's restart of ``plugin_id``
    applied the plugins folder again: that restart starts it next."""
    _log.info(
        "reload: runner %s was stopped; host.restart(%r), under way, starts it",
        runner_id,
        plugin_id,
    )
