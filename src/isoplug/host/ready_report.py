"""What a runner's ready report says, as the host keeps it: which plugins serve, which can
never be loaded (their import failed: restarting cannot fix code) and which failed their
``setup`` (a crash), with each failure's text made safe for the host's records.
"""

from __future__ import annotations

import dataclasses

from isoplug.control import LoadFailure, LoadStage, ReadyReport
from isoplug.host.offers import Offers
from isoplug.wire.sanitize import clean_block, clean_text

__all__ = [
    "MAX_FAILURE_CHARS",
    "ReportReading",
    "failure_text",
    "read_report",
    "traceback_block",
]

#: A plugin's import or setup error as the host reports it: the message (a few lines at most,
#: normally) and the traceback (deep chained ones fit) are cut past these.
MAX_FAILURE_CHARS = 4 * 1024
_MAX_TRACEBACK_CHARS = 64 * 1024


@dataclasses.dataclass(frozen=True)
class ReportReading:
    #: What the runner serves: nothing when a ``setup`` failed (the runner then exits).
    offers: Offers
    #: Plugins whose import failed, or whose configuration was refused: plugin id -> why
    #: (sanitized).
    unloadable: dict[str, str]
    #: Why a plugin's ``setup`` failed (sanitized), in the report's order.
    setup_failures: list[str]
    #: Those of ``unloadable`` whose configuration does not fit their schema.
    config_refused: frozenset[str] = frozenset()


def failure_text(failure: LoadFailure) -> str:
    """The runner's text (a plugin's exception message and traceback) for the host's own
    records: escaped, capped, its continuation lines indented."""
    return clean_text(failure.message, MAX_FAILURE_CHARS) + traceback_block(failure.traceback)


def traceback_block(traceback: str) -> str:
    """A runner's traceback text as it follows a message in the host's records: on lines of
    its own, escaped, capped, indented; "" for none."""
    if not traceback:
        return ""
    return f"\n{clean_block(traceback.rstrip(), _MAX_TRACEBACK_CHARS)}"


def read_report(report: ReadyReport) -> ReportReading:
    unloadable: dict[str, str] = {}
    setup_failures: list[str] = []
    config_refused: set[str] = set()
    for failure in report.failures:
        if failure.stage in (LoadStage.IMPORT, LoadStage.CONFIG):
            unloadable[failure.plugin_id] = failure_text(failure)
            if failure.stage == LoadStage.CONFIG:
                config_refused.add(failure.plugin_id)
        else:
            setup_failures.append(failure_text(failure))
    offers = Offers({} if setup_failures else report.loaded)
    return ReportReading(offers, unloadable, setup_failures, frozenset(config_refused))
