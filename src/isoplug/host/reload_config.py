"""A new ``[config]`` a hot reload hands to a runner: taken live, kept for the next start of a
stopped plugin, taken by a restart, or refused (its problem remembered, so that it is not
offered again until its folder changes: see :class:`~isoplug.host.runner_set.RunnerSet`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from isoplug.errors import ConfigInvalid
from isoplug.host.manifest import Manifest
from isoplug.host.ready_report import MAX_FAILURE_CHARS
from isoplug.host.status import PluginState
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.log_guard import guarded_logger
from isoplug.wire.sanitize import clean_path, clean_text

__all__ = ["Refused", "offer_config", "quoted_failure"]

_log = guarded_logger("isoplug.host")

#: The ``[config]`` tables plugins refused, by plugin id: the table and the problem.
Refused = dict[str, tuple[Mapping[str, Any], str]]


async def offer_config(
    supervisor: RunnerSupervisor,
    manifest: Manifest,
    refused: Refused,
    still_current: Callable[[], bool],
) -> None:
    """Hand ``manifest``'s ``[config]`` to its plugin in ``supervisor``'s runner; a refusal
    (or a failure to hand it over) is logged and kept in ``refused``. ``still_current``: the
    supervisor still runs the plugin (not stopped or replaced since)."""
    try:
        live = await supervisor.set_config(
            manifest.id, manifest.config, cause="plugin.toml [config] edited"
        )
    except ConfigInvalid as exc:
        problem = (
            f"{clean_path(manifest.path, MAX_FAILURE_CHARS)}: {exc}; it keeps the "
            "configuration it runs with"
        )
        refused[manifest.id] = (manifest.config, problem)
        _log.error("reload: %s", problem)
        return
    except Exception as exc:
        if not still_current():
            return  # stopped or replaced meanwhile: nothing is left to configure
        # Counted as refused (host.kept, the exit code) while it runs without it.
        problem = (
            f"{clean_path(manifest.path, MAX_FAILURE_CHARS)}: its new configuration could "
            f"not be handed to plugin {manifest.id}: {quoted_failure(exc)}"
        )
        if supervisor.manifests[manifest.id].config != manifest.config:
            refused[manifest.id] = (manifest.config, problem)
        _log.error("reload: %s", problem)
        return
    refused.pop(manifest.id, None)
    how = (
        "taken live"
        if live
        # set_config() keeps it for the next start of a stopped plugin.
        else "kept for its next start: it is stopped"
        if supervisor.state is PluginState.STOPPED
        else "its runner restarted with it"
    )
    _log.info("reload: plugin %s has a new configuration (%s)", manifest.id, how)


def quoted_failure(exc: BaseException) -> str:
    """An exception as a reload record quotes it: its type and message, sanitized (a runner
    or a plugin may have put words in it), on one line."""
    return clean_text(f"{type(exc).__name__}: {exc}", MAX_FAILURE_CHARS)
