"""A host in a process of its own, for tests that stop it (SIGSTOP) and continue it:
``python -m tests.paused_host_child DIR [held STARTED GATE ANSWERED]``.

It runs a :class:`~isoplug.Host` over the plugins of ``DIR`` with health checks every 0.2 s
(``health_timeout`` 0.5 s, ``health_grace`` 1 s: a pause of 1.5 s is past them), and prints,
one per line, on stdout: ``runner <id> <pid>`` for every ready plugin, then ``ready``; every
record of ``isoplug.host`` as ``<LEVEL> <message>``; ``query <plugin> <time>`` once a health
query was sent (``time.monotonic()``, the clock the test reads too). With ``held``, it then
calls ``latch.held`` with a 1 s timeout and prints ``call result <value>`` or ``call failed
<type>: <message>``. It runs until killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from typing import Any

from isoplug import Host
from isoplug.host.health import Finding, HealthWatch
from isoplug.testing import FAST

#: A pause of the host this long is past the runners' health_timeout + health_grace.
CONFIG = dataclasses.replace(FAST, health_interval=0.2, health_timeout=0.5, health_grace=1.0)
#: latch.held's timeout.
CALL_TIMEOUT = 1.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Said(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        say(f"{record.levelname} {record.getMessage()}".replace("\n", " "))


def _announce_queries() -> None:
    """Says when each health query was sent (written to the runner's socket)."""
    check = HealthWatch.check

    async def announced(watch: HealthWatch) -> Finding:
        link = watch.link
        if "query" not in vars(link):
            query = link.query

            async def sent_query(timeout: float, since: float = 0.0) -> Any:
                # The query's first step writes it; this task's next step comes after that.
                asking = asyncio.ensure_future(query(timeout, since))
                await asyncio.sleep(0)
                say(f"query {watch.runner_id} {time.monotonic()}")
                return await asking

            link.query = sent_query  # type: ignore[method-assign]
        return await check(watch)

    setattr(HealthWatch, "check", announced)  # noqa: B010 - a patch mypy cannot type


async def main(arguments: list[str]) -> None:
    directory, action = arguments[0], arguments[1:]
    host_logger = logging.getLogger("isoplug.host")
    host_logger.addHandler(_Said())
    host_logger.setLevel(logging.INFO)
    _announce_queries()
    async with Host(directory, config=CONFIG) as host:
        for info in await host.wait_ready(30):
            say(f"runner {info.id} {info.pid}")
        say("ready")
        if action[:1] == ["held"]:
            started, gate, answered = action[1:]
            try:
                result = await host.call_with(
                    "latch",
                    "held",
                    kwargs={"started": started, "gate": gate, "answered": answered},
                    timeout=CALL_TIMEOUT,
                )
            except Exception as exc:
                say(f"call failed {type(exc).__name__}: {exc}".replace("\n", " "))
            else:
                say(f"call result {result}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
