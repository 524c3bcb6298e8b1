"""A test plugin that logs exceptions and returns the traceback Python printed for them."""

from __future__ import annotations

import logging
import traceback

import structlog

import isoplug

log = logging.getLogger("raiser.work")


class PluginError(Exception):
    """An exception class only the plugin has."""


def _parse(settings: dict[str, str]) -> int:
    return int(settings["port"])


def _load() -> int:
    try:
        return _parse({"port": "eighty"})
    except ValueError as exc:
        raise PluginError("bad configuration") from exc


class Raiser(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def log_exception(self) -> str:
        """log.exception() of a chained exception; returns the traceback as Python prints it."""
        try:
            _load()
        except PluginError as exc:
            log.exception("startup failed")
            return "".join(traceback.format_exception(exc))
        return ""

    @isoplug.method
    async def fail_chained(self) -> None:
        """Raises a chained exception (PluginError from ValueError) to its caller."""
        _load()

    @isoplug.method
    async def log_structlog_exception(self) -> str:
        """structlog's .exception() (exc_info=True in the event); returns the traceback."""
        logger = structlog.wrap_logger(
            logging.getLogger("raiser.structured"),
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        try:
            _load()
        except PluginError as exc:
            logger.exception("structured failure", attempt=2)
            return "".join(traceback.format_exception(exc))
        return ""

    @isoplug.method
    async def log_dict(self) -> None:
        """A dict logged with plain logging (no structlog), one key claiming another plugin."""
        log.error({"order": 7, "status": "payment failed", "plugin_id": "bank"})

    @isoplug.method
    async def log_builtin(self) -> str:
        """log.exception() of a builtin ValueError; returns its last line as Python prints it."""
        try:
            int("eighty")
        except ValueError as exc:
            log.exception("parsing failed")
            return traceback.format_exception_only(exc)[-1]
        return ""
