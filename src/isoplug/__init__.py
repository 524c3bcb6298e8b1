"""isoplug: run third-party plugins in isolated runner processes without losing their logs.

Host side: :class:`Host` (with :class:`SupervisorConfig`, :class:`PluginInfo`,
:class:`PluginState`). Plugin side: :class:`Plugin`, :func:`method`, :func:`on_event`,
:class:`PluginContext`. Every exception isoplug raises derives from :class:`IsoplugError`.

The names are imported on first use, so ``import isoplug.wire`` (sans-IO) does not pull in
asyncio, and a runner process does not import the host's code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isoplug.errors import (
    ConfigInvalid,
    IsoplugError,
    NoTemporaryFolder,
    PluginBusy,
    PluginFailed,
    UnencodableValue,
)
from isoplug.lazy_names import lazy_names
from isoplug.release import VERSION as __version__

if TYPE_CHECKING:
    from isoplug.control import CapabilityDenied
    from isoplug.host import (
        ExitAccount,
        Host,
        ManifestError,
        PluginInfo,
        PluginNotReady,
        PluginState,
        PluginUnavailable,
        StateChange,
        SupervisorConfig,
        Unavailability,
    )
    from isoplug.runner.api import Plugin, PluginContext, method, on_event

__all__ = [
    "CapabilityDenied",
    "ConfigInvalid",
    "ExitAccount",
    "Host",
    "IsoplugError",
    "ManifestError",
    "NoTemporaryFolder",
    "Plugin",
    "PluginBusy",
    "PluginContext",
    "PluginFailed",
    "PluginInfo",
    "PluginNotReady",
    "PluginState",
    "PluginUnavailable",
    "StateChange",
    "SupervisorConfig",
    "Unavailability",
    "UnencodableValue",
    "__version__",
    "method",
    "on_event",
]

_LAZY = {
    "CapabilityDenied": "isoplug.control",
    "ExitAccount": "isoplug.host",
    "Host": "isoplug.host",
    "ManifestError": "isoplug.host",
    "PluginInfo": "isoplug.host",
    "PluginState": "isoplug.host",
    "PluginNotReady": "isoplug.host",
    "PluginUnavailable": "isoplug.host",
    "StateChange": "isoplug.host",
    "SupervisorConfig": "isoplug.host",
    "Unavailability": "isoplug.host",
    "Plugin": "isoplug.runner.api",
    "PluginContext": "isoplug.runner.api",
    "method": "isoplug.runner.api",
    "on_event": "isoplug.runner.api",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals(), __all__)
