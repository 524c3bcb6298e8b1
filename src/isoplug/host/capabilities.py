"""Host capabilities: functions of the host application that plugins may call.

Which plugin may call which capability is decided by its manifest and checked by the
supervisor; this module only holds the functions and calls them with keyword arguments.

A capability that raises is the host's business: the plugin gets a
:class:`~isoplug.errors.CapabilityFailed` with the exception's type and message, never the
host's traceback (its code, paths and values), and the host logs the traceback on
``isoplug.host``. A plugin can make a capability fail as often as it can call it, so after the
first report a second one per capability is a summary, once per interval.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from isoplug.control import CapabilityDenied
from isoplug.errors import CapabilityFailed
from isoplug.logs.report_throttle import ReportThrottle
from isoplug.wire.sanitize import clean_text

__all__ = ["CapabilityRegistry"]

_log = logging.getLogger("isoplug.host")

#: Cap for an error text that quotes what a plugin sent (a keyword argument's name, say).
_MAX_REASON_CHARS = 1000
#: After a capability's first failure is reported, at most one summary per this many seconds.
REPORT_INTERVAL = 1.0


class CapabilityRegistry:
    """Capabilities by name. Sync functions run on the host's event loop: keep them quick
    (use ``async def`` for anything that waits)."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._reports = ReportThrottle(REPORT_INTERVAL, timer=True)

    def close(self) -> None:
        """Send the failure summaries still pending."""
        self._reports.close()

    def register(self, name: str, function: Callable[..., Any]) -> None:
        """Offer ``function`` as capability ``name`` (replacing any previous one)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a capability name must be a non-empty string, got {name!r}")
        if not callable(function):
            raise TypeError(f"capability {name!r}: {function!r} is not callable")
        self._functions[name] = function

    def names(self) -> list[str]:
        return sorted(self._functions)

    async def invoke(self, name: str, kwargs: dict[str, Any], plugin: str = "") -> Any:
        """Call capability ``name`` for ``plugin``.

        Raises :class:`~isoplug.control.CapabilityDenied` if the host registered none,
        :class:`TypeError` when ``kwargs`` do not fit the function's signature, and
        :class:`~isoplug.errors.CapabilityFailed` when the function raised (reported here).
        """
        function = self._functions.get(name)
        if function is None:
            raise CapabilityDenied(
                f"the host has no capability {name!r} (registered: "
                f"{', '.join(self.names()) or 'none'})"
            )
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None  # some builtins have none: let the call itself complain
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                # The plugin receives it as a RemoteError carrying this message.
                raise TypeError(
                    f"arguments do not fit host capability {name}{signature}: "
                    f"{clean_text(str(exc), _MAX_REASON_CHARS)}"
                ) from None
        try:
            result = function(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            what = f"{type(exc).__name__}: {clean_text(str(exc), _MAX_REASON_CHARS)}"
            self._report_failure(name, plugin, what, exc)
            failure = CapabilityFailed(f"host capability {name!r} raised {what}")
            failure.traceback_is_private = True
            raise failure from None
        return result

    def _report_failure(self, name: str, plugin: str, what: str, exc: Exception) -> None:
        # The plugin id is the host's (the supervisor checked it against the runner's manifests).
        caller = f" (called by plugin {plugin!r})" if plugin else ""
        first = (
            f"host capability {name!r} raised {what}{caller}; the plugin got its type and message"
        )

        def emit(text: str) -> None:
            _log.warning(text, exc_info=exc if text is first else None)

        self._reports.report(
            f"capability_failed:{name}",
            first,
            summary=lambda tally: (
                f"host capability {name!r} raised {tally.events} more time(s) in the last "
                f"{tally.seconds:.0f} s (the latest: {tally.detail})"
            ),
            emit=emit,
            detail=what,
        )
