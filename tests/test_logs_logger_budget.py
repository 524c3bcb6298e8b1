"""A standalone :class:`~isoplug.logs.LogReceiver` bounds the loggers its senders add to
``logging``'s registry (never freed) over all its connections: a sender that reconnects gets
no fresh allowance. Records past the budget still arrive, on the prefix's logger, counted."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from isoplug.logs import LogMetrics, LogReceiver
from tests.test_logs_forwarding import BOTH_MODES, PREFIX, finish, receiving

#: Each connection logs on this many fresh names, three registry entries each
#: (kids.cN.nI with its placeholders).
NAMES = 60
CONNECTIONS = 6
BUDGET = 200

RECONNECTING_SENDER = f"""
import logging
from isoplug.logs import ForwardingHandler, forward_logs
for c in range({CONNECTIONS}):
    forward_logs(level=logging.INFO)
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, ForwardingHandler))
    for i in range({NAMES}):
        logging.getLogger(f"c{{c}}.n{{i}}").info("x")
    handler.close()
    logging.getLogger().removeHandler(handler)
"""


def registry_size() -> int:
    return len(logging.Logger.manager.loggerDict)


@BOTH_MODES
async def test_reconnecting_senders_share_one_logger_budget(mode: str) -> None:
    before = registry_size()
    async with receiving(mode) as (receiver, collector):
        receiver._logger_budget.left = BUDGET  # the same receiver, a budget a test can spend
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RECONNECTING_SENDER,
            env={**os.environ, **receiver.child_env()},
            stderr=asyncio.subprocess.PIPE,
        )
        code, stderr = await finish(child)
        assert code == 0, stderr
        await collector.wait_until(
            lambda: sum(r.getMessage() == "x" for r in collector.records) == NAMES * CONNECTIONS
        )
    assert len(receiver.metrics()) == CONNECTIONS
    # Bounded across the reconnections: each connection alone would have added 3 * NAMES.
    assert registry_size() - before <= BUDGET
    records = [r for r in collector.records if r.getMessage() == "x"]
    # Every record arrived; those past the budget on the prefix's own logger.
    on_prefix = [r for r in records if r.name == PREFIX]
    assert on_prefix and len(records) == NAMES * CONNECTIONS
    metrics = LogMetrics.combined(receiver.metrics().values())
    assert metrics.over_logger_budget == len(on_prefix)
    assert any(
        "logs on more new logger names than" in r.getMessage()
        for r in collector.records
        if r.name == PREFIX
    )


def test_the_budget_is_a_receiver_setting() -> None:
    receiver = LogReceiver(max_logger_entries=7)
    assert receiver._logger_budget.left == 7
