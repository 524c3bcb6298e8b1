"""Output a thread makes while isoplug hands it one of its records: plain text, counted.

While a thread hands the logging handlers a record that isoplug made of output (a printed
line, an uncaught exception, a warning, a loguru message:
:func:`~isoplug.logs.output_records.deliver`), what those handlers write to ``sys.stdout`` /
``sys.stderr``, or log through loguru, is never made a record again: it could reach the same
handler, which would write again, and so without end (loguru's ``InterceptHandler`` recipe
did, a RecursionError report at a time, until the call timed out). It goes to the process's
real file descriptor instead, as plain text, once (the host reads it as the runner's stdout
or stderr),
unless it is a handler's rendering of a record, which is that record
(:mod:`isoplug.logs.rendered_records`).

Each such write is counted here (:func:`passed_as_text`). The first is reported at once, then
at most one summary every :data:`REPORT_INTERVAL` seconds, straight to the forwarding handler:
never through the handlers that wrote it.
"""

from __future__ import annotations

import atexit
import itertools
import logging

from isoplug.logs.kept_forwarder import kept_forwarder
from isoplug.logs.report_throttle import ReportThrottle, Tally
from isoplug.logs.sources import current_source

__all__ = ["REPORT_INTERVAL", "passed_as_text"]

#: Seconds between two reports of nested output.
REPORT_INTERVAL = 10.0
_KIND = "nested_output"

_count = itertools.count(1)
_throttle = ReportThrottle(REPORT_INTERVAL, timer=True)
# The summary still pending at exit goes out too: registered after the forwarding handler's
# own hook (its module is imported first), so it runs before that one closes the handler.
atexit.register(_throttle.close)


def passed_as_text(what: str, where: str = "stderr") -> None:
    """Count one write to ``what`` (``"stdout"``, ``"stderr"``, or ``"loguru"`` for a message
    logged through it) that went to the runner's ``where`` (its file descriptor) as plain
    text, because its thread was handing out a record of isoplug's; report it."""
    total = next(_count)
    target = "logged through loguru" if what == "loguru" else f"wrote to {what}"
    _throttle.report(
        _KIND,
        (
            f"a log handler {target} while isoplug handed it a record of the plugin's "
            "output (a print, a stderr write, an uncaught exception, a loguru message): that "
            f"text went to the runner's {where} as plain text, not as a record of its own, so "
            "that it cannot come back to the same handler without end (a handler that feeds "
            "its own output back into logging); further ones are summed up at most every "
            f"{REPORT_INTERVAL:g} s"
        ),
        summary=_summary,
        emit=_emit,
        detail=f"{what}; {total:,} in all",
    )


def _summary(tally: Tally) -> str:
    return (
        f"{tally.events:,} more writes of log handlers, made while isoplug handed them records "
        f"of the plugin's output, went to the runner's stdout or stderr as plain text over "
        f"{tally.seconds:.1f} s (the latest to {tally.detail})"
    )


def _emit(text: str) -> None:
    """Straight to the forwarding handler: the plugin's handlers are what wrote."""
    forwarder = kept_forwarder()
    if forwarder is None:
        return
    source = current_source.get()
    name = f"{source}.isoplug.logs" if source else "isoplug.logs"
    forwarder.handle(logging.LogRecord(name, logging.WARNING, __file__, 0, text, None, None))
