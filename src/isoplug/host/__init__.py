"""The host side: find plugins, supervise their runner processes, call them.

:class:`Host` is the entry point; :mod:`isoplug.host.supervisor` runs one runner,
:mod:`isoplug.host.stdio` reads its fd-level output in threads, :mod:`isoplug.host.manifest` and
:mod:`isoplug.host.registry` read the plugins directory. The host never imports the runner's
code: it only names the module to start (:data:`isoplug.control.RUNNER_MODULE`).
"""

from isoplug.host.config import SupervisorConfig
from isoplug.host.host import Host
from isoplug.host.manifest import Manifest, ManifestError, RestartPolicy
from isoplug.host.status import (
    ExitAccount,
    PluginInfo,
    PluginNotReady,
    PluginState,
    PluginUnavailable,
    StateChange,
    Unavailability,
)

__all__ = [
    "ExitAccount",
    "Host",
    "Manifest",
    "ManifestError",
    "PluginInfo",
    "PluginNotReady",
    "PluginState",
    "PluginUnavailable",
    "RestartPolicy",
    "StateChange",
    "SupervisorConfig",
    "Unavailability",
]
