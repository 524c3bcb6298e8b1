"""Host capabilities: functions of the host application that plugins may call.

Which plugin may call which capability is decided by its manifest and checked by the
supervisor; this module only holds the functions and calls them with keyword arguments.

A capability that raises is the host's business: the plugin gets a
:class:`~isoplug.errors.CapabilityFailed` with the exception's type and message, never the
host's traceback (its code, paths and values), and the host logs the traceback on
``isoplug.host``. The same goes for a result the plugin cannot be sent (a value msgpack cannot
carry, or one larger than a message may be): the plugin gets a ``CapabilityFailed`` saying so,
the host a warning naming the plugin and the capability. A capability raising ``SystemExit``
fails the same way (logged as an ERROR): a plugin must not be able to end the host by calling
it; ``KeyboardInterrupt`` still propagates. A capability that raises
:class:`~isoplug.CapabilityDenied` refuses the call rather than failing: the plugin gets
that ``CapabilityDenied``, as for a capability the host does not offer, and nothing is logged
(a host may refuse a plugin on its own terms, a test harness refuses in ``deny``). A plugin
can make a capability fail as often as it can call it, so after the first report a second one
per capability is a summary, once per interval.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from isoplug.control import CapabilityDenied
from isoplug.errors import CapabilityFailed
from isoplug.log_guard import guarded_logger
from isoplug.logs.report_throttle import ReportThrottle
from isoplug.rpc.remote_errors import exception_message, exit_request_text
from isoplug.sizes import format_size
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE, encode_value
from isoplug.wire.sanitize import clean_text

__all__ = ["CapabilityRegistry"]

_log = guarded_logger("isoplug.host")

#: Cap for an error text that quotes what a plugin sent (a keyword argument's name, say).
_MAX_REASON_CHARS = 1000
#: After a capability's first failure is reported, at most one summary per this many seconds.
REPORT_INTERVAL = 1.0
#: The largest encoded result a capability may return: what fits in one frame to the runner,
#: with room for the answer around it.
MAX_RESULT_BYTES = DEFAULT_MAX_FRAME_SIZE - 4096


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

        Raises :class:`~isoplug.CapabilityDenied` if the host registered none,
        :class:`~isoplug.errors.CapabilityFailed` when ``kwargs`` do not fit the function's
        signature or the function raised (each reported here), and the function's own
        ``CapabilityDenied`` as it is (a refusal, not a failure).
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
                # The plugin's mistake, said as a failure of the capability's call: the
                # plugin catches it as one, the host says it once (no traceback: no host code
                # ran).
                what = (
                    f"was called with arguments that do not fit {name}{signature}: "
                    f"{clean_text(str(exc), _MAX_REASON_CHARS)}"
                )
                self._report_failure(name, plugin, what)
                raise _failed(f"host capability {name!r} {what}") from None
        try:
            result = function(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except CapabilityDenied:
            raise
        except Exception as exc:
            what = f"{type(exc).__name__}: {clean_text(exception_message(exc), _MAX_REASON_CHARS)}"
            self._report_failure(name, plugin, f"raised {what}", exc)
            raise _failed(f"host capability {name!r} raised {what}") from None
        except SystemExit as exc:
            # The same words as for a plugin method's (isoplug.runner.dispatch).
            what = clean_text(exit_request_text(exc), _MAX_REASON_CHARS)
            self._report_failure(
                name,
                plugin,
                f"raised {what}, which was not allowed to end the host",
                exc,
                level=logging.ERROR,
            )
            raise _failed(f"host capability {name!r} raised {what}") from None
        return self._encoded(name, plugin, result)

    def _encoded(self, name: str, plugin: str, result: Any) -> msgspec.Raw:
        """``result`` encoded for the plugin; :class:`~isoplug.errors.CapabilityFailed` (and a
        report) when it cannot be sent, rather than an error from deep in the session."""
        try:
            encoded = encode_value(result)
        except Exception as exc:
            what = clean_text(str(exc), _MAX_REASON_CHARS)
            self._report_failure(
                name, plugin, f"returned a value that cannot be sent to a plugin ({what})"
            )
            raise _failed(
                f"host capability {name!r} returned a value that cannot be sent to a plugin: {what}"
            ) from None
        if len(encoded) > MAX_RESULT_BYTES:
            what = (
                f"returned {len(encoded):,} bytes, more than the {MAX_RESULT_BYTES:,} "
                f"({format_size(MAX_RESULT_BYTES)}) a result sent to a plugin may have"
            )
            self._report_failure(name, plugin, what)
            raise _failed(f"host capability {name!r} {what}")
        return encoded

    def _report_failure(
        self,
        name: str,
        plugin: str,
        what: str,
        exc: BaseException | None = None,
        level: int = logging.WARNING,
    ) -> None:
        # The plugin id is the host's (the supervisor checked it against the runner's manifests).
        caller = f" (called by plugin {plugin!r})" if plugin else ""
        first = f"host capability {name!r} {what}{caller}; the plugin got an error saying so"

        def emit(text: str) -> None:
            _log.log(level, text, exc_info=exc if text is first else None)

        self._reports.report(
            # An ERROR (SystemExit) is never folded into the summary of WARNINGs.
            f"capability_failed:{name}:{level}",
            first,
            summary=lambda tally: (
                f"host capability {name!r} failed {tally.events} more time(s) in the last "
                f"{tally.seconds:.0f} s (the latest: {tally.detail})"
            ),
            emit=emit,
            detail=what,
        )


def _failed(message: str) -> CapabilityFailed:
    """What the plugin is told: ``message``, never the host's traceback."""
    failure = CapabilityFailed(message)
    failure.traceback_is_private = True
    return failure
