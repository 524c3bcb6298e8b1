"""The runner process: loads plugins and serves the host's calls (``python -m isoplug.runner``).

:mod:`isoplug.runner.api` is the plugin author's API, re-exported as ``isoplug.Plugin`` and
friends; the rest is the process the host starts.
"""

from isoplug.runner.api import Plugin, PluginContext, method, on_event

__all__ = ["Plugin", "PluginContext", "method", "on_event"]
