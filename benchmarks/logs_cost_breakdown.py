"""Where the child-side cost of a forwarded ``logger.info()`` goes, stage by stage, by the clock.

``logs_vs_peers.py`` times the whole forwarding handler against the do-nothing floor, and
``logs_instructions.py`` counts its instructions. On a 2-core VM the two disagree (about 1.2x the
floor in instructions, 1.3x-1.6x by the clock, from day to day). This benchmark shows where the
clock's share goes: one child process logs chunks of a burst through each stage in turn,
interleaved round by round, each stage doing a little more of the handler's work:

- **floor**: a do-nothing handler;
- **capture**: the record turned into wire bytes (``isoplug.logs.capture``) and thrown away,
  which any design that survives the process's death must do on the calling thread;
- **capture+queue**: the same under a lock, queued, the queue joined into one buffer every 100
  records: a minimal thread-safe batching handler;
- **handler, no writes**: the real ``ForwardingHandler``, connected, sender thread and all, with
  its frames thrown away instead of written to the socket;
- **isoplug**: the real handler from ``forward_logs()``, to a real ``LogReceiver``.

For each stage it prints the median cost per call and the median of the chunks' ratios to the
floor chunk of the same round, by the wall clock and by the logging thread's CPU time. Where the
two agree, the time is spent on the CPU in the calling thread, not waiting (for the GIL, say).

Run: ``python benchmarks/logs_cost_breakdown.py [--quick] [--chunk N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _logs_breakdown_child import ISOPLUG_SENDER, WARMUP

from isoplug.logs import LogReceiver

CHILD_SCRIPT = Path(__file__).resolve().parent / "_logs_breakdown_child.py"
PREFIX = "breakdown"
#: Records per chunk. Each chunk of the isoplug stage follows a pause, so its first 200 records
#: are written through one by one (the handler's write-through burst, ~25 us each here), as at
#: the start of any burst; a 200,000-record burst hides that, a chunk must be long enough to.
CHUNK = 20_000


class Counter(logging.Handler):
    """Counts each sender's records, and the receiver's reports apart."""

    def __init__(self) -> None:
        super().__init__()
        self.by_sender: dict[str, int] = {}
        self.reports = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "isoplug_report", False):
            self.reports += 1
        else:
            sender = str(getattr(record, "sender", ""))
            self.by_sender[sender] = self.by_sender.get(sender, 0) + 1


def paired_ratios(values: list[float], floor: list[float]) -> list[float]:
    return [value / base for value, base in zip(values, floor, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=CHUNK, help="records per chunk")
    parser.add_argument("--rounds", type=int, default=20, help="chunks per stage")
    parser.add_argument("--quick", action="store_true", help="5,000-record chunks, 6 rounds")
    args = parser.parse_args()
    chunk, rounds = (5_000, 6) if args.quick else (args.chunk, args.rounds)

    counter = Counter()
    receiving = logging.getLogger(PREFIX)
    receiving.addHandler(counter)
    receiving.setLevel(logging.DEBUG)
    receiving.propagate = False
    with LogReceiver(prefix=PREFIX) as receiver:
        child = subprocess.run(
            [sys.executable, str(CHILD_SCRIPT), str(chunk), str(rounds)],
            env={**os.environ, **receiver.child_env()},
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
    results: dict[str, list[list[float]]] = json.loads(child.stdout)

    floor_wall = [wall for wall, _ in results["floor"]]
    floor_cpu = [cpu for _, cpu in results["floor"]]
    print(f"Child-side cost per logger.info(), {rounds} interleaved chunks of {chunk:,} per stage")
    header = f"{'us per call':>12}{'x floor, wall (min..max)':>30}{'x floor, CPU':>14}"
    print(f"   {'stage':<22}{header}")
    for stage, chunks in results.items():
        walls = [wall for wall, _ in chunks]
        cpus = [cpu for _, cpu in chunks]
        wall_ratios = paired_ratios(walls, floor_wall)
        cpu_ratios = paired_ratios(cpus, floor_cpu)
        spread = f"({min(wall_ratios):.2f}..{max(wall_ratios):.2f})"
        print(
            f"   {stage:<22}{statistics.median(walls) / chunk * 1e6:>12.2f}"
            f"{statistics.median(wall_ratios):>18.3f} {spread:>11}"
            f"{statistics.median(cpu_ratios):>14.3f}"
        )
    sent = rounds * chunk + WARMUP
    delivered = counter.by_sender.get(ISOPLUG_SENDER, 0)
    print(
        f"   isoplug stage: {delivered:,} of {sent:,} records delivered; the no-writes stage's "
        f"thrown-away records drew {counter.reports} loss reports, as they should"
    )


if __name__ == "__main__":
    main()
