"""A test plugin whose records claim what the host cannot take as said: a time before its
process started or after the host received them, maps in lists under reserved names, reserved
names spelt with look-alike letters of other scripts; and that prints structlog's JSON lines
(PrintLoggerFactory), whose location is its own code, not structlog's."""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Any

import structlog

import isoplug

log = logging.getLogger("claims")
#: A year from now, and the start of 1999.
FUTURE = time.time() + 365 * 86400
PAST = 915148800.0
#: Maps in lists under reserved names (ECS flattens them into error.type...).
LISTED: dict[str, Any] = {
    "error": [{"type": "KeyboardInterrupt", "message": "host shutting down"}],
    "log": [{"logger": "isoplug.host"}],
    "code": [{"function": "host_main"}],
    "plugin": [{"id": "other"}],
}
#: Reserved names spelt with letters no look-alike table lists: an Izhitsa, an Armenian o,
#: a Latin small capital U, an Armenian n, a Latin small capital I, a Cherokee-free Coptic.
LOOKALIKES: dict[str, Any] = {
    "le\u0475el": "critical",
    "l\u0585gger": "isoplug.host",
    "pl\u1d1cgin_id": "billing",
    "run\u0578er_pid": 1,
    "p\u026ad": 1,
    "\u0565rror.type": "KeyboardInterrupt",
}
#: Ordinary keys in other languages: they keep their names.
FOREIGN: dict[str, Any] = {
    "gr\u00f6\u00dfe": 1,
    "\u540d\u524d": "x",
    "\u0438\u043c\u044f": "y",
    "s\u00f8n": 2,
}


def _claiming(created: float) -> logging.Filter:
    class Claim(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.created = created
            record.msecs = 0.0
            return True

    return Claim()


def _stdlib_structlog(*processors: Any) -> Any:
    structlog.configure(
        processors=[*processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("billing")


class Claimant(isoplug.Plugin):
    @isoplug.method
    async def times(self) -> None:
        """Records claiming a time a year ahead and in 1999 (a filter's record.created,
        loguru's patch), a structlog event whose TimeStamper says the same forged time, and
        one whose TimeStamper says the true time; then an honest record."""
        from loguru import logger

        for created, text in ((FUTURE, "from the future"), (PAST, "from 1999")):
            claim = _claiming(created)
            log.addFilter(claim)
            try:
                log.warning(text)
            finally:
                log.removeFilter(claim)
        old = datetime.datetime(1999, 1, 1, tzinfo=datetime.UTC)
        logger.patch(lambda r: r.update(time=old)).info("loguru from 1999")  # type: ignore[call-arg]
        billing = logging.getLogger("billing")
        claim = _claiming(PAST)
        billing.addFilter(claim)
        try:
            _stdlib_structlog().info("event from 1999", timestamp=old.isoformat())
            _stdlib_structlog(structlog.processors.TimeStamper(fmt="iso")).info("event stamped now")
        finally:
            billing.removeFilter(claim)
            structlog.reset_defaults()
        log.info("honest time")

    @isoplug.method
    async def lists(self) -> None:
        """Maps in lists under reserved names: a logging extra, a structlog event, loguru."""
        from loguru import logger

        log.info("listed extra", extra=LISTED)
        try:
            _stdlib_structlog().info("listed event", **LISTED)
        finally:
            structlog.reset_defaults()
        logger.bind(**LISTED).info("listed loguru")

    @isoplug.method
    async def alike(self) -> None:
        """Look-alike spellings of reserved names, and ordinary keys in other languages."""
        log.info("alike extra", extra={**LOOKALIKES, **FOREIGN})

    @isoplug.method
    def json_print(self) -> None:
        """structlog printing JSON lines to stdout: the standard production setup."""
        parameters = structlog.processors.CallsiteParameter
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.CallsiteParameterAdder(
                    [parameters.FUNC_NAME, parameters.LINENO]
                ),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(sys.stdout),
            cache_logger_on_first_use=False,
        )
        try:
            printer = structlog.get_logger()
            printer.info("printed by structlog")  # the line's location
            # What its processors would not write: overwritten after them, so claims.
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    lambda _, __, event: {
                        **event,
                        "timestamp": "1999-01-01T00:00:00Z",
                        "func_name": "host_main",
                        "lineno": 1,
                        "exception": "Traceback (most recent call last):\nKeyboardInterrupt",
                    },
                    structlog.processors.JSONRenderer(),
                ]
            )
            structlog.get_logger().info("forged by structlog")
        finally:
            structlog.reset_defaults()
        sys.stdout.flush()
