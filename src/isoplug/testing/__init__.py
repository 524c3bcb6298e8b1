"""Helpers for testing plugins, and code that uses isoplug.

- :class:`PluginHarness` (``async with``) and :class:`BlockingHarness` (``with``) run a
  plugin's folder, or a folder of plugins, in real runner processes under a real host: call
  methods, publish events, offer or refuse capabilities, crash, stop, restart or configure a
  plugin, wait for records.
- :class:`Records`, :func:`watching`, :func:`attached`, :func:`eventually`: keep log records and
  wait, on the event loop, until a condition holds.
- The pytest fixture ``isoplug_host`` (this package's pytest plugin, installed with isoplug).
  The plugin also has the hosts of a test session share their zygote: :func:`share_zygotes`.
- :func:`busy_cpu`: one CPU kept busy, to test a plugin as a busy machine starves it.
- :mod:`isoplug.testing.otlp`: an OTLP receiver, to test an OpenTelemetry export.
"""

from isoplug.host.zygote_pool import share_zygotes
from isoplug.testing.blocking_harness import BlockingHarness
from isoplug.testing.cpu import busy_cpu
from isoplug.testing.harness import FAST, CapabilityCall, PluginHarness
from isoplug.testing.records import Records, attached, eventually, watching

__all__ = [
    "FAST",
    "BlockingHarness",
    "CapabilityCall",
    "PluginHarness",
    "Records",
    "attached",
    "busy_cpu",
    "eventually",
    "share_zygotes",
    "watching",
]
