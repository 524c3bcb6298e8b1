"""The OpenTelemetry resource of a plugin's records: who emitted them.

A plugin's records are grouped by (plugin, runner, process): the application's resource
(``service.name``...) with ``isoplug.plugin.id``, ``isoplug.plugin.version``,
``isoplug.runner.pid`` and ``process.pid``, which is the runner's for what the runner emits
and a process the plugin forked for that process's own records (it logs through a connection
of its own, which the kernel names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RESOURCE_NAMES", "ResourceKey", "resource_attributes", "resource_key"]

#: The attributes a plugin's resource adds to the application's (:func:`resource_attributes`).
RESOURCE_NAMES = frozenset(
    {"isoplug.plugin.id", "isoplug.plugin.version", "isoplug.runner.pid", "process.pid"}
)

#: A key of the resource a record belongs to: (plugin id, runner pid, pid of the process that
#: emitted it), or None for the host.
ResourceKey = tuple[str, int | None, int | None] | None


def resource_key(plugin_id: str, values: Mapping[str, Any]) -> ResourceKey:
    """The resource key of a plugin's record, from its attributes (``values``)."""
    runner_pid, process = values.get("runner_pid"), values.get("process")
    if values.get("isoplug_report") is True:
        # The host's words about the plugin (a loss, a connection's end), made in the host's
        # process: the plugin's runner's, not the host's, is the process it is about.
        process = runner_pid
    return (
        plugin_id,
        runner_pid if type(runner_pid) is int else None,
        process if type(process) is int else None,
    )


def resource_attributes(
    base: Mapping[str, Any], key: ResourceKey, version: str | None
) -> dict[str, Any]:
    """The resource of a plugin's records: the host application's (``service.name``...),
    with the plugin, its version, its runner's pid and the emitting process's."""
    if key is None:
        return dict(base)
    plugin_id, runner_pid, process = key
    attributes = {**base, "isoplug.plugin.id": plugin_id}
    if version:
        attributes["isoplug.plugin.version"] = version
    if runner_pid is not None:
        attributes["isoplug.runner.pid"] = runner_pid
    if process is not None or runner_pid is not None:
        attributes["process.pid"] = process if process is not None else runner_pid
    return attributes
