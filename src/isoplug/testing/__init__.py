"""Helpers for testing plugins, and code that uses isoplug.

- :class:`PluginHarness` (``async with``) and :class:`BlockingHarness` (``with``) run a
  plugin's folder, or a folder of plugins, in real runner processes under a real host: call
  methods, publish events, offer or refuse capabilities, crash, stop, restart or configure a
  plugin, wait for records.
- :class:`Records`, :func:`watching`, :func:`attached`, :func:`eventually`: keep log records and
  wait, on the event loop, until a condition holds.
- The pytest fixture ``isoplug_host`` (this package's pytest plugin, installed with isoplug),
  of type :class:`IsoplugHost`. The plugin also has the hosts of a test session share their
  zygote: :func:`share_zygotes`.
- :func:`busy_cpu`: one CPU kept busy, to test a plugin as a busy machine starves it.
- :mod:`isoplug.testing.otlp`: an OTLP receiver, to test an OpenTelemetry export.

The names are imported on first use: the pytest plugin, which pytest imports in every session
of an environment where isoplug is installed, imports this package, and a session that tests
no plugin should not pay for the host's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isoplug.lazy_names import lazy_names
from isoplug.zygote_sharing import share_zygotes

if TYPE_CHECKING:
    from isoplug.testing.blocking_harness import BlockingHarness
    from isoplug.testing.cpu import busy_cpu
    from isoplug.testing.harness import FAST, CapabilityCall, PluginHarness
    from isoplug.testing.pytest_plugin import IsoplugHost
    from isoplug.testing.records import Records, attached, eventually, watching

__all__ = [
    "FAST",
    "BlockingHarness",
    "CapabilityCall",
    "IsoplugHost",
    "PluginHarness",
    "Records",
    "attached",
    "busy_cpu",
    "eventually",
    "share_zygotes",
    "watching",
]

_LAZY = {
    "BlockingHarness": "isoplug.testing.blocking_harness",
    "busy_cpu": "isoplug.testing.cpu",
    "FAST": "isoplug.testing.harness",
    "CapabilityCall": "isoplug.testing.harness",
    "PluginHarness": "isoplug.testing.harness",
    "IsoplugHost": "isoplug.testing.pytest_plugin",
    "Records": "isoplug.testing.records",
    "attached": "isoplug.testing.records",
    "eventually": "isoplug.testing.records",
    "watching": "isoplug.testing.records",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals(), __all__)
