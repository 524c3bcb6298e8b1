"""One table row per plugin: what the dashboard shows of its state, process and logs."""

from __future__ import annotations

import dataclasses
import logging

from isoplug.host.status import ExitAccount, PluginInfo
from isoplug.logs.metrics import LogMetrics
from isoplug.tui.process_stats import ProcessSample

__all__ = ["COLUMNS", "PluginRow", "describe_exit", "format_bytes", "format_duration"]

#: (key, heading, width) of the table's columns, in order. The width holds the longest value
#: the column usually shows (a 7-digit pid, ``restarting``, ``SIGKILL (host)``, ``1023.9
#: MiB``), so that columns do not jump as values change; a longer value widens its column.
COLUMNS = (
    ("plugin", "plugin", 6),
    ("state", "state", 10),
    ("level", "level", 8),
    ("pid", "pid", 7),
    ("uptime", "uptime", 7),
    ("restarts", "restarts", 8),
    ("last_exit", "last exit", 14),
    ("rate", "records/s", 9),
    ("drops", "drops", 5),
    ("events_dropped", "events dropped", 14),
    ("rss", "RSS", 10),
    ("cpu", "CPU", 5),
)


@dataclasses.dataclass(frozen=True)
class PluginRow:
    plugin: str
    state: str
    #: The level the plugin runs at (``DEBUG``...), or ``-`` when unknown.
    level: str
    pid: str
    uptime: str
    restarts: str
    last_exit: str
    rate: str
    #: Log records the host dropped.
    drops: str
    #: Events the plugin dropped, its queue full (``PluginInfo.events_dropped``).
    events_dropped: str
    rss: str
    cpu: str

    @classmethod
    def build(
        cls,
        info: PluginInfo,
        *,
        metrics: LogMetrics | None,
        records_per_second: float | None,
        process: ProcessSample | None,
        level: int | None = None,
    ) -> PluginRow:
        drops = sum(metrics.dropped.values()) if metrics is not None else None
        return cls(
            plugin=info.id,
            state=info.state.value,
            level=logging.getLevelName(level) if level is not None else "-",
            pid=str(info.pid) if info.pid is not None else "-",
            uptime=(
                format_duration(process.uptime)
                if info.pid is not None and process and process.uptime is not None
                else "-"
            ),
            restarts=str(info.restarts),
            last_exit=describe_exit(info.last_exit),
            rate=f"{records_per_second:.0f}" if records_per_second is not None else "-",
            drops=str(drops) if drops is not None else "-",
            events_dropped=str(info.events_dropped),
            rss=format_bytes(process.rss) if process and process.rss is not None else "-",
            cpu=(
                f"{process.cpu_percent:.0f}%"
                if process and process.cpu_percent is not None
                else "-"
            ),
        )

    def cells(self) -> tuple[str, ...]:
        return tuple(getattr(self, key) for key, _, _ in COLUMNS)


def describe_exit(account: ExitAccount | None) -> str:
    """``"code 7"``, ``"SIGKILL (host)"``, ``"SIGSEGV"``, or ``"-"`` before any exit."""
    if account is None:
        return "-"
    if account.signal_name is None:
        return f"code {account.returncode}"
    return account.signal_name + (" (host)" if account.sent_by_host is not None else "")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_bytes(size: int) -> str:
    mebibytes = size / (1024 * 1024)
    return f"{mebibytes:.1f} MiB" if mebibytes < 1024 else f"{mebibytes / 1024:.2f} GiB"
