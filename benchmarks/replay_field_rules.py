"""Host-side cost of rebuilding one plugin record, by what the record carries, counted in CPU
instructions under valgrind's callgrind (noise-free, as ``logs_instructions.py``).

What the renaming rule (:mod:`isoplug.logs.record_names`) and the cleaning of nested values
(:mod:`isoplug.logs.rebuild`) add runs here, in the host's replay, never in the plugin's
``logger.info()``. Kinds, each a record as the wire delivers it:

- **plain**: a message, no extras (the floor the others are compared with);
- **3 extras**: ``user_id``, ``order``, ``request_id``;
- **nested extra**: one dict extra holding a string, a number and a list;
- **structlog event**: an event dict with ``event``, ``level``, ``logger`` and one field.

Each kind runs in a child under callgrind rebuilding the record 1,000 and 6,000 times; the
difference divided by 5,000 is one rebuild (start-up and imports cancel out). Compare two
versions by pointing ``--src`` at each tree's ``src``.

Needs valgrind. Run: ``python benchmarks/replay_field_rules.py [--src PATH]`` (about a
minute).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

SMALL, LARGE = 1_000, 6_000
KINDS = ("plain", "3 extras", "nested extra", "structlog event")

CHILD = r"""
import logging, sys, time
from isoplug.logs.limits import ReplayLimits
from isoplug.logs.metrics import LogMetrics
from isoplug.logs.rebuild import RecordRebuilder
from isoplug.logs.replay_reports import ReplayReports
from isoplug.wire import LogRecordData

kind, count = sys.argv[1], int(sys.argv[2])
identity = {"plugin_id": "p", "runner_pid": 1}
metrics = LogMetrics()
reports = ReplayReports(
    "plugin.p", identity=identity, description="p", metrics=metrics, known={}, sender_pid=None
)
rebuilder = RecordRebuilder(ReplayLimits(), identity, reports, metrics, sender_pid=None)
logger = logging.getLogger("plugin.p.x")
site = ("x", 20, "INFO", time.time(), "/a.py", "a.py", "a", 1, "f", 1, "MainThread", 1,
        "MainProcess", 1)
records = {
    "plain": LogRecordData(*site, "hello"),
    "3 extras": LogRecordData(
        *site, "hello", extra={"user_id": 1, "order": "x", "request_id": "abc"}
    ),
    "nested extra": LogRecordData(
        *site, "hello", extra={"data": {"a": 1, "b": "two", "c": [1, 2, "x"]}}
    ),
    "structlog event": LogRecordData(
        *site, "", event={"event": "paid", "order": 7, "level": "info", "logger": "x"},
        event_method="info",
    ),
}
data = records[kind]
for _ in range(count):
    rebuilder.rebuild(data, logger, 20, identity)
"""


def instructions(source: str, kind: str, count: int) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            kind,
            str(count),
        ],
        env={**os.environ, "PYTHONPATH": source},
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise SystemExit(f"callgrind said no count:\n{result.stderr}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    parser.add_argument("--src", default=default, help="the isoplug source tree to count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("this benchmark needs valgrind (Debian: apt install valgrind)")
    per_rebuild = {
        kind: (instructions(args.src, kind, LARGE) - instructions(args.src, kind, SMALL))
        / (LARGE - SMALL)
        for kind in KINDS
    }
    floor = per_rebuild["plain"]
    print(f"instructions per rebuilt record ({args.src})")
    for kind, count in per_rebuild.items():
        print(f"  {kind:16s} {count:9,.0f}  x{count / floor:.2f} of plain")


if __name__ == "__main__":
    main()
