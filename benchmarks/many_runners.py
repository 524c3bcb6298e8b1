"""Many runners logging at once: is every record delivered, how late, and does the host's event
loop stay responsive?

One ``Host`` runs ``--runners`` plugins (32), one runner each; each plugin logs numbered records
from a worker thread at a steady rate (or at full speed). A handler on ``plugin`` notes each
record's delivery latency (handled - ``record.created``); a task on the host's loop notes how
late a 1 ms sleep wakes (loop lag). Sections:

1. idle: the loop lag of the host with its runners up and quiet (the floor);
2. oversubscribed: every runner at 2,000 records/s (64,000/s in all: more than 2 cores can
   log and replay), with the runners at the default lower CPU priority
   (``SupervisorConfig.runner_nice``) and, in the same run, at the host's own (``runner_nice=0``):
   loop lag, delivery latency, the host's share of a core, and delivered + dropped = emitted;
3. within capacity: every runner at 500 records/s;
4. the aggregate rate at which delivery latency p99 crosses 50 ms (rates stepped up), next to
   the rate of one runner's full-speed burst;
5. 8 runners flooding at full speed: the host's total replay rate against one runner's, and the
   host's memory (RSS) meanwhile.

Run: ``python benchmarks/many_runners.py [--fast] [--rounds N] [--runners N]``. Sections 3-5 run
at the default priority.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from _helpers import PACER_PLUGIN_CODE, loop_stalls_during, machine_line, percentile

from isoplug import Host, SupervisorConfig

CROSSING = 0.050  # s: the delivery latency p99 whose crossing section 4 reports


class Sink(logging.Handler):
    """Notes each plugin record's delivery latency (replay threads call it concurrently:
    list.append is atomic)."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies: list[float] = []

    def handle(self, record: logging.LogRecord) -> bool:  # no lock, no filters: cheap
        if not getattr(record, "isoplug_report", False):
            self.latencies.append(time.time() - record.created)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() instead
        raise AssertionError


@dataclass
class Figures:
    """One scenario's numbers."""

    lag: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    emitted: int = 0
    delivered: int = 0
    dropped: int = 0
    seconds: float = 0.0
    host_cpu: float = 0.0  # host CPU seconds per wall second

    @property
    def accounted(self) -> bool:
        return self.delivered + self.dropped == self.emitted


def write_plugins(root: Path, count: int) -> list[str]:
    ids = [f"r{number:02d}" for number in range(count)]
    for plugin_id in ids:
        directory = root / plugin_id
        directory.mkdir()
        (directory / "plugin.toml").write_text(
            f'id = "{plugin_id}"\nversion = "0.1"\nentry = "pacer_plugin:Pacer"\n'
            'log_level = "INFO"\n'
        )
        (directory / "pacer_plugin.py").write_text(PACER_PLUGIN_CODE)
    return ids


def totals(host: Host, ids: list[str]) -> tuple[int, int]:
    """Records replayed and dropped so far, over all plugins."""
    replayed = dropped = 0
    for plugin_id in ids:
        metrics = host.log_metrics(plugin_id)
        replayed += metrics.replayed
        dropped += sum(metrics.dropped.values())
    return replayed, dropped


async def run_load(
    host: Host, ids: list[str], sink: Sink, count: int, rate: float, *, timeout: float
) -> Figures:
    """Every plugin of ``ids`` logs ``count`` records at ``rate`` (0: full speed); wait until
    every record is replayed or dropped."""
    base_replayed, base_dropped = totals(host, ids)
    sink.latencies = []
    figures = Figures(emitted=count * len(ids))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.monotonic()

    async def load() -> None:
        await asyncio.gather(
            *(
                host.call_with(
                    plugin_id,
                    "paced",
                    kwargs={"count": count, "rate": rate},
                    timeout=timeout,
                )
                for plugin_id in ids
            )
        )
        deadline = time.monotonic() + timeout
        while True:
            replayed, dropped = totals(host, ids)
            if replayed - base_replayed + dropped - base_dropped >= figures.emitted:
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)

    figures.lag, _ = await loop_stalls_during(load())
    figures.seconds = time.monotonic() - began
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    figures.host_cpu = (
        cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    ) / figures.seconds
    replayed, dropped = totals(host, ids)
    figures.delivered = replayed - base_replayed
    figures.dropped = dropped - base_dropped
    figures.latency = sink.latencies
    return figures


async def idle_lag(seconds: float) -> list[float]:
    lag, _ = await loop_stalls_during(asyncio.sleep(seconds))
    return lag


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """The host's peak RSS while it runs, sampled by a thread every 10 ms."""

    def __init__(self) -> None:
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib())


@dataclass
class Config:
    runners: int
    nice: int | None
    sections: frozenset[str]
    over_seconds: float
    capacity_seconds: float
    step_seconds: float
    steps: tuple[int, ...]
    burst: int


class Results:
    """Every round's figures, by name."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.notes: list[str] = []

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def cell(self, name: str, scale: float = 1.0, digits: int = 2) -> str:
        values = self.values.get(name)
        if not values:
            return "-"
        med = statistics.median(values) * scale
        if len(values) == 1:
            return f"{med:.{digits}f}"
        return (
            f"{med:.{digits}f} ({min(values) * scale:.{digits}f}..{max(values) * scale:.{digits}f})"
        )

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


def record(results: Results, prefix: str, figures: Figures) -> None:
    results.add(f"{prefix} lag p50", percentile(figures.lag, 0.50))
    results.add(f"{prefix} lag p99", percentile(figures.lag, 0.99))
    results.add(f"{prefix} lag max", max(figures.lag))
    if figures.latency:
        results.add(f"{prefix} latency p50", percentile(figures.latency, 0.50))
        results.add(f"{prefix} latency p99", percentile(figures.latency, 0.99))
    results.add(f"{prefix} host cpu", figures.host_cpu)
    results.add(f"{prefix} delivered", figures.delivered)
    results.add(f"{prefix} dropped", figures.dropped)
    results.add(f"{prefix} seconds", figures.seconds)
    if not figures.accounted:
        results.notes.append(
            f"{prefix}: {figures.emitted:,} emitted, {figures.delivered:,} delivered + "
            f"{figures.dropped:,} dropped: "
            f"{figures.emitted - figures.delivered - figures.dropped:,} unaccounted"
        )


async def with_host(
    plugins: Path, nice: int | None, work: Callable[[Host], Awaitable[None]]
) -> None:
    config = SupervisorConfig() if nice is None else SupervisorConfig(runner_nice=nice)
    async with Host(plugins, config=config) as host:
        await host.wait_ready(120)
        await work(host)


async def one_round(
    plugins: Path, ids: list[str], sink: Sink, config: Config, *, number: int, results: Results
) -> None:
    if "over" not in config.sections:
        priorities = []
    else:
        priorities = [("low priority", config.nice), ("runner_nice=0", 0)]
    if number % 2:
        priorities.reverse()  # neither always runs first
    over_count = int(2_000 * config.over_seconds)
    for name, nice in priorities:

        async def oversubscribed(host: Host, name: str = name) -> None:
            results.add(f"{name} idle lag p99", percentile(await idle_lag(2.0), 0.99))
            figures = await run_load(host, ids, sink, over_count, 2_000.0, timeout=600.0)
            record(results, f"{name} over", figures)

        await with_host(plugins, nice, oversubscribed)
        print(f"round {number + 1}: oversubscribed, {name} done", file=sys.stderr)

    async def at_default(host: Host) -> None:
        if "capacity" in config.sections:
            await within_capacity(host)
        if "steps" in config.sections:
            await rate_steps(host)
        if "flood" in config.sections:
            await floods(host)

    async def within_capacity(host: Host) -> None:
        capacity = await run_load(
            host, ids, sink, int(500 * config.capacity_seconds), 500.0, timeout=120.0
        )
        record(results, "capacity", capacity)
        print(f"round {number + 1}: within capacity done", file=sys.stderr)

    async def rate_steps(host: Host) -> None:
        crossed = None
        for per_runner in config.steps:
            step = await run_load(
                host,
                ids,
                sink,
                int(per_runner * config.step_seconds),
                float(per_runner),
                timeout=300.0,
            )
            p99 = percentile(step.latency, 0.99)
            results.add(f"step {per_runner} p99", p99)
            results.add(f"step {per_runner} rate", step.delivered / step.seconds)
            if crossed is None and p99 > CROSSING:
                crossed = per_runner * len(ids)
        results.add("crossing", float(crossed) if crossed is not None else float("inf"))
        print(f"round {number + 1}: rate steps done", file=sys.stderr)

    async def floods(host: Host) -> None:
        single = await run_load(host, ids[:1], sink, config.burst, 0.0, timeout=300.0)
        results.add("single burst rate", single.delivered / single.seconds)
        results.add("single burst lag p99", percentile(single.lag, 0.99))
        rss_before = rss_mib()
        with RssSampler() as sampler:
            flood = await run_load(host, ids[:8], sink, config.burst, 0.0, timeout=600.0)
        record(results, "flood8", flood)
        results.add("flood8 rate", flood.delivered / flood.seconds)
        results.add("flood8 rss before", rss_before)
        results.add("flood8 rss peak", sampler.peak)
        results.add("flood8 rss after", rss_mib())
        print(f"round {number + 1}: floods done", file=sys.stderr)

    if config.sections - {"over"}:
        await with_host(plugins, config.nice, at_default)


MS = 1e3


def report(results: Results, config: Config, rounds: int) -> None:
    print(
        machine_line(
            f"sched_autogroup_enabled={autogroup_setting()}; {config.runners} runners, "
            f"{rounds} round(s): median (min..max)"
        )
    )
    for section, show in (
        ("over", report_oversubscribed),
        ("capacity", report_capacity),
        ("steps", report_steps),
        ("flood", report_floods),
    ):
        if section in config.sections:
            print()
            show(results, config)
    for note in results.notes:
        print(f"UNACCOUNTED: {note}")


def report_oversubscribed(results: Results, config: Config) -> None:
    nice = SupervisorConfig().runner_nice if config.nice is None else config.nice
    print(
        f"oversubscribed: {config.runners} runners x 2,000 records/s for "
        f"{config.over_seconds:g} s ({config.runners * 2_000:,}/s in all)"
    )
    print(f"   {'':34s}{f'runner_nice={nice}':>28s}{'runner_nice=0':>28s}")
    rows = [
        ("idle loop lag p99, ms", "idle lag p99", MS, 3),
        ("loop lag p50, ms", "over lag p50", MS, 2),
        ("loop lag p99, ms", "over lag p99", MS, 2),
        ("loop lag max, ms", "over lag max", MS, 1),
        ("delivery latency p50, ms", "over latency p50", MS, 2),
        ("delivery latency p99, ms", "over latency p99", MS, 2),
        ("host CPU, cores", "over host cpu", 1.0, 2),
        ("duration (emit + drain), s", "over seconds", 1.0, 1),
        ("delivered", "over delivered", 1.0, 0),
        ("dropped (reported)", "over dropped", 1.0, 0),
    ]
    for label, key, scale, digits in rows:
        low = results.cell(f"low priority {key}", scale, digits)
        even = results.cell(f"runner_nice=0 {key}", scale, digits)
        print(f"   {label:34s}{low:>28s}{even:>28s}")
    low_lag = results.median("low priority over lag p99")
    idle = results.median("low priority idle lag p99")
    lag_ratio = results.median("runner_nice=0 over lag p99") / low_lag
    lat_ratio = results.median("runner_nice=0 over latency p99") / results.median(
        "low priority over latency p99"
    )
    print(
        f"   loop lag p99 at runner_nice={nice}: x{low_lag / idle:.0f} idle; runner_nice=0 / "
        f"runner_nice={nice}: loop lag p99 x{lag_ratio:.1f}, delivery latency p99 "
        f"x{lat_ratio:.1f}"
    )


def report_capacity(results: Results, config: Config) -> None:
    print(
        f"within capacity: {config.runners} runners x 500 records/s for "
        f"{config.capacity_seconds:g} s"
    )
    for label, key, scale, digits in [
        ("loop lag p99, ms", "capacity lag p99", MS, 2),
        ("delivery latency p50, ms", "capacity latency p50", MS, 2),
        ("delivery latency p99, ms", "capacity latency p99", MS, 2),
        ("delivered", "capacity delivered", 1.0, 0),
        ("dropped (reported)", "capacity dropped", 1.0, 0),
    ]:
        print(f"   {label:34s}{results.cell(key, scale, digits):>28s}")


def report_steps(results: Results, config: Config) -> None:
    print(
        f"delivery latency p99 by aggregate rate ({config.step_seconds:g} s per step), ms; "
        f"crossing {CROSSING * 1e3:.0f} ms"
    )
    for per_runner in config.steps:
        print(
            f"   {per_runner * config.runners:>8,}/s ({per_runner:>5,}/runner)"
            f"{results.cell(f'step {per_runner} p99', MS, 2):>28s}   achieved "
            f"{results.cell(f'step {per_runner} rate', 1.0, 0)}/s"
        )
    crossing = results.median("crossing")
    crossing_text = "not crossed" if crossing == float("inf") else f"{crossing:,.0f}/s"
    line = f"   p99 crosses {CROSSING * 1e3:.0f} ms at: {crossing_text}"
    if "single burst rate" in results.values:
        single = results.median("single burst rate")
        line += f"; one runner's full-speed burst: {single:,.0f}/s"
        if crossing != float("inf"):
            line += f" (crossing / burst x{crossing / single:.2f})"
    print(line)


def report_floods(results: Results, config: Config) -> None:
    print(f"8 runners flooding at full speed, {config.burst:,} records each")
    single = results.median("single burst rate")
    rate8 = results.median("flood8 rate")
    print(
        f"   total replay rate: {results.cell('flood8 rate', 1.0, 0)}/s; one runner: "
        f"{results.cell('single burst rate', 1.0, 0)}/s; ratio x{rate8 / single:.2f}"
    )
    print(
        f"   loop lag p99 {results.cell('flood8 lag p99', MS, 2)} ms (one runner's burst: "
        f"{results.cell('single burst lag p99', MS, 2)} ms)"
    )
    print(
        f"   host RSS, MiB: before {results.cell('flood8 rss before', 1.0, 1)}, peak "
        f"{results.cell('flood8 rss peak', 1.0, 1)}, after "
        f"{results.cell('flood8 rss after', 1.0, 1)}"
    )
    print(
        f"   delivered {results.cell('flood8 delivered', 1.0, 0)}, dropped (reported) "
        f"{results.cell('flood8 dropped', 1.0, 0)}"
    )


def autogroup_setting() -> str:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "n/a"


async def main(config: Config, rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    sink = Sink()
    plugin_logger = logging.getLogger("plugin")
    plugin_logger.addHandler(sink)
    plugin_logger.setLevel(logging.INFO)
    plugin_logger.propagate = False
    results = Results()
    with tempfile.TemporaryDirectory(prefix="isoplug-many-") as directory:
        ids = write_plugins(Path(directory), config.runners)
        for number in range(rounds):
            await one_round(Path(directory), ids, sink, config, number=number, results=results)
    report(results, config, rounds)


def parse() -> tuple[Config, int]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; fast 1)")
    parser.add_argument("--runners", type=int, default=32)
    parser.add_argument(
        "--nice", type=int, help="runner_nice of the low-priority runs (default: the default)"
    )
    parser.add_argument(
        "--sections",
        default="over,capacity,steps,flood",
        help="which sections to run (comma-separated; default all)",
    )
    args = parser.parse_args()
    fast: bool = args.fast
    steps = (250, 500, 1000, 2000, 3000, 4500, 6000)
    config = Config(
        runners=args.runners,
        nice=args.nice,
        sections=frozenset(args.sections.split(",")),
        over_seconds=3.0 if fast else 10.0,
        capacity_seconds=5.0 if fast else 30.0,
        step_seconds=1.5 if fast else 4.0,
        steps=steps,
        burst=20_000 if fast else 100_000,
    )
    if config.runners < 8:
        parser.error("--runners must be at least 8 (section 5 floods 8)")
    return config, args.rounds or (1 if fast else 3)


if __name__ == "__main__":
    asyncio.run(main(*parse()))
