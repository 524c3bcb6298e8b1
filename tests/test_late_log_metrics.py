"""What happens to a runner's records after its runner's log accounting ended: records still
unreplayed when a stop gives up on slow handlers are counted, under the reason its WARNING
gives, in ``host.log_metrics()``, and stay counted after the host closed."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from isoplug.logs import DropReason
from isoplug.testing.records import eventually
from tests.test_host_stdio import PLUGIN, STDOUT, running

LINES = 20_000


async def test_records_a_stop_gives_up_on_are_counted_receiver_closed_after_the_close(
    tmp_path: Path,
) -> None:
    """A 2 ms handler and 20,000 fd-level lines: the stop waits 5 s, then drops the rest. Each
    line ends up replayed or dropped as receiver_closed in the metrics, as the WARNING says,
    and the count holds after the host closed (it was a copy taken at the close before)."""
    release = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("line "):
                release.wait(0.002)  # a slow handler, released at the end of the test

    slow = Slow()
    logging.getLogger(STDOUT).addHandler(slow)
    try:
        async with running(tmp_path) as (host, waiter):
            text = "".join(f"line {i}\n" for i in range(LINES))
            await host.call(PLUGIN, "write", fd=1, text=text)
            await waiter.wait_for(STDOUT, "line 0")
            await host.stop(PLUGIN)
        release.set()

        def settled() -> bool:
            metrics = host.log_metrics(PLUGIN)
            return metrics.replayed + sum(metrics.dropped.values()) == LINES

        await eventually(settled)
        metrics = host.log_metrics(PLUGIN)
        warnings = [
            r.getMessage() for r in waiter.records if "the runner was closed" in r.getMessage()
        ]
    finally:
        release.set()
        logging.getLogger(STDOUT).removeHandler(slow)
    assert metrics.streams.get("stdout") == metrics.received == LINES
    dropped = metrics.dropped.get(DropReason.RECEIVER_CLOSED, 0)
    assert dropped > 0
    assert set(metrics.dropped) == {DropReason.RECEIVER_CLOSED}
    said = sum(int(w.split("dropped ")[1].split(" ")[0].replace(",", "")) for w in warnings)
    assert said == dropped
