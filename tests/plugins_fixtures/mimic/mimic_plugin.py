"""A test plugin that makes the host report records of it lost in transit (it skips 41
sequence numbers, as a plugin can: its handler is in its own process), then logs the same
words itself on its root logger, at a level it names ``isoplug``, with an ``isoplug_report``
extra: everything a plugin controls, set to look like the host's report."""

from __future__ import annotations

import logging

import isoplug
from isoplug.logs import ForwardingHandler

log = logging.getLogger("mimic.work")

IMITATION = "41 log records from plugin mimic never arrived (sequence numbers 3 to 43)"


class Mimic(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        log.warning("before the gap")
        for handler in logging.getLogger().handlers:
            if isinstance(handler, ForwardingHandler):
                handler._seq += 41
        log.warning("after the gap")
        logging.addLevelName(31, "isoplug")
        logging.getLogger().log(31, IMITATION, extra={"isoplug_report": True})
        logging.getLogger().warning(IMITATION)
        log.warning("imitations sent")
