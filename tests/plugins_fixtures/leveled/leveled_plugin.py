"""A test plugin that logs at DEBUG, INFO and WARNING on three kinds of logger, so that a test
can see which levels reach the host."""

from __future__ import annotations

import logging

import isoplug

log = logging.getLogger(__name__)
#: Stands for a third-party library's logger: outside the plugin's package and ctx.logger.
vendor_log = logging.getLogger("leveled_vendor")
log.debug("module imported")

LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING)


class Leveled(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        ctx.logger.debug("setup ran")

    @isoplug.method
    async def emit(self, tag: str) -> None:
        """Log ``tag`` at each level on each logger, then an ERROR "done <tag>" that every
        level lets through: once it arrives, so has everything before it."""
        for level in LEVELS:
            name = logging.getLevelName(level)
            self.ctx.logger.log(level, "ctx %s %s", tag, name)
            log.log(level, "module %s %s", tag, name)
            vendor_log.log(level, "vendor %s %s", tag, name)
        self.ctx.logger.error("done %s", tag)

    @isoplug.method
    async def pin_own_loggers(self, level: str) -> None:
        """What a plugin may do itself: set its loggers' levels."""
        self.ctx.logger.setLevel(level)
        log.setLevel(level)
