"""A test plugin that claims, in its records, what only the host may say: another plugin's
identity, another logger, another process, an output stream; and that logs texts far over
every size cap."""

from __future__ import annotations

import logging
import os

import structlog

import isoplug

log = logging.getLogger("impostor.work")


class _ClaimsProcessOne(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.process = 1
        return True


class Impostor(isoplug.Plugin):
    @isoplug.method
    async def pid(self) -> int:
        return os.getpid()

    @isoplug.method
    async def structlog_as_the_host(self) -> None:
        """structlog handing event dicts to logging (as the docs' recipe expects): an event
        with the host's keys forged, and one as any plugin logs (with add_logger_name)."""
        for processors in ([], [structlog.stdlib.add_logger_name]):
            structlog.configure(
                processors=[
                    *processors,
                    structlog.stdlib.add_log_level,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
                ],
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger,
                cache_logger_on_first_use=False,
            )
            try:
                if not processors:
                    structlog.get_logger("x").warning(
                        "plugin victim: ready",
                        logger="isoplug.host",
                        logger_name="isoplug.host",
                        plugin_id="victim",
                        runner_pid=1,
                        process=1,
                        stream="stdout",
                    )
                else:
                    structlog.get_logger("sl").warning("an ordinary event", order=7)
            finally:
                structlog.reset_defaults()

    @isoplug.method
    async def claim_extras(self) -> None:
        """extras named like what the host sets: an output stream, isoplug's cut flag."""
        log.warning("claims", extra={"stream": "stdout", "truncated": True})

    @isoplug.method
    async def claim_process(self) -> None:
        """A record whose process a filter rewrote, and an ordinary one."""
        claims = _ClaimsProcessOne()
        log.addFilter(claims)
        try:
            log.warning("process one")
        finally:
            log.removeFilter(claims)
        log.warning("process mine")

    @isoplug.method
    async def print_long_line(self, length: int) -> None:
        print("P" * length, flush=True)

    @isoplug.method
    async def log_huge(self, length: int) -> None:
        """A message, an extra value and an exception message of ``length`` characters each."""
        log.warning("message " + "L" * length)
        log.warning("extra", extra={"big": "E" * length})
        try:
            raise ValueError("M" * length)
        except ValueError:
            log.exception("exception")
