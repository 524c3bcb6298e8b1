"""The OpenTelemetry SDK's own messages about isoplug's exporters, named and throttled.

The SDK's OTLP exporters log a warning per retry ("Transient error ... retrying in 2.00s")
and an error per batch they give up on, under their module's logger. With the collector
down that is several lines a second, which a console (``isoplug run``'s shows every record
not a plugin's as ``isoplug``'s) cannot tell from isoplug's own. While isoplug's own
exporters run (not when it joins the application's providers, whose exporters are the
application's), :class:`SdkMessages` takes those loggers' records and puts them out again on
``isoplug.otel.sdk``, their text led by ``OpenTelemetry SDK (<module>):``, through a
:class:`~isoplug.logs.report_throttle.ReportThrottle`: each kind (logger and message
template) the first time at once, then at most one summary per interval. The export's
shutdown sends the summaries pending and detaches it: the SDK's loggers are the
application's again (an export the shutdown abandoned says how it ended on them, as the SDK
does: a line or two, after the shutdown's own report of what it dropped).
"""

from __future__ import annotations

import logging

from isoplug.log_guard import guarded_logger
from isoplug.logs.report_throttle import ReportThrottle, Tally
from isoplug.wire.sanitize import clean_text

__all__ = ["SDK_LOGGERS", "SdkMessages", "sdk_messages"]

#: The loggers of the SDK's OTLP exporters and metric reader (their modules' names).
SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.sdk.metrics._internal.export",
)

_out = guarded_logger("isoplug.otel.sdk")


class SdkMessages(logging.Filter):
    """Attached to :data:`SDK_LOGGERS` (as a filter: it sees their records before any
    handler) from :meth:`start` to :meth:`stop`, it lets none through and says each again,
    throttled (module docstring). One per process (:func:`sdk_messages`)."""

    def __init__(self) -> None:
        super().__init__()
        self._reports: ReportThrottle | None = None
        self._attached = False

    def start(self, interval: float = 10.0) -> None:
        """Throttle from now on (attached if it was not)."""
        if not self._attached:
            self._attached = True
            for name in SDK_LOGGERS:
                logging.getLogger(name).addFilter(self)
        self._reports = ReportThrottle(interval, timer=True)

    def stop(self) -> None:
        """Send the summaries still pending, and detach: a shut-down export leaves nothing of
        isoplug's on loggers that are not isoplug's."""
        if self._attached:
            self._attached = False
            for name in SDK_LOGGERS:
                logging.getLogger(name).removeFilter(self)
        reports, self._reports = self._reports, None
        if reports is not None:
            reports.close()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception as exc:
            text = f"{record.msg} (formatting failed: {type(exc).__name__})"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += f" ({type(error).__name__}: {error})"
        module = record.name.removeprefix("opentelemetry.")
        said = f"OpenTelemetry SDK ({module}): {clean_text(text, 1000)}"
        level = record.levelno

        def summary(tally: Tally) -> str:
            return (
                f"OpenTelemetry SDK ({module}): {tally.events:,} more like this in the last "
                f"{tally.seconds:.0f} s, the latest: {tally.detail}"
            )

        reports = self._reports
        if reports is None:
            # A record that met the filter while stop() detached it: said, unthrottled.
            _out.log(level, "%s", said)
            return False
        # The kind is the logger and the template, both the SDK's code: a bounded set.
        reports.report(
            f"{record.name}\0{str(record.msg)[:200]}",
            said,
            summary=summary,
            emit=lambda line: _out.log(level, "%s", line),
            detail=clean_text(text, 300),
        )
        return False


_messages = SdkMessages()


def sdk_messages() -> SdkMessages:
    """The process's :class:`SdkMessages`."""
    return _messages
