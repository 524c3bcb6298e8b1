"""The loggers a host makes for its plugins' records stay in ``logging``'s registry for good, so
they are bounded in the process as a whole: hosts one after another share the process's bound,
a plugin whose id changes under hot reload keeps the share it spent (and the old id's state is
dropped), and ``over_logger_budget`` counts records, whether the connection still remembers
names or not. Real runners, real sockets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.logs import routing, set_process_logger_budget
from isoplug.logs.routing import process_logger_budget
from isoplug.testing import Records, eventually, watching
from tests.plugins_fixtures import FAST

NAMER = """
import logging
import isoplug

class Namer(isoplug.Plugin):
    @isoplug.method
    def names(self, tag: str, count: int) -> None:
        # plugin.<id>.<tag>_n<i>: three registry entries each, as the budget counts them.
        for i in range(count):
            logging.getLogger(f"{tag}_n{i}").warning("named")
        logging.getLogger().warning(f"done {tag}")

    @isoplug.method
    def repeat(self, name: str, count: int) -> None:
        for _ in range(count):
            logging.getLogger(name).warning("repeated")
        logging.getLogger().warning(f"done {name}")
"""


def write_namer(plugins: Path, plugin_id: str = "namer") -> Path:
    folder = plugins / "namer"
    folder.mkdir(parents=True)
    (folder / "namer_plugin.py").write_text(NAMER)
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "namer_plugin:Namer"\n'
    )
    return folder


@contextmanager
def process_allowance(entries: int) -> Iterator[None]:
    """Let isoplug's senders add ``entries`` more registry entries in this process, from now."""
    previous = set_process_logger_budget(process_logger_budget().spent + entries)
    try:
        yield
    finally:
        set_process_logger_budget(previous)


async def told(records: Records, text: str) -> None:
    """Wait for the plugin's marker: its records before it (one connection, in order) are in."""
    await eventually(lambda: bool(records.select(text=text)))


async def test_hosts_one_after_another_share_the_process_bound(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_namer(plugins)
    registry = logging.Logger.manager.loggerDict
    before = len(registry)
    bound, names = 150, 30  # the first host's names fit, the second's in part, the third's not
    over: list[int] = []
    with process_allowance(bound), watching("plugin.namer") as records:
        for n in range(3):
            async with Host(plugins, config=FAST) as host:
                await host.wait_ready(20)
                await host.call("namer", "names", f"host{n}", names)
                await told(records, f"done host{n}")
                over.append(host.log_metrics("namer").over_logger_budget)
    assert len(registry) - before <= bound
    assert over[0] == 0 and 0 < over[1] < names and over[2] == names, over
    # Every record arrived: those past the bound on the plugin's own logger, each counted.
    named = [r for r in records.records if r.getMessage() == "named"]
    assert len(named) == 3 * names
    assert sum(r.name == "plugin.namer" for r in named) == sum(over)
    assert records.matching("plugin.namer", "are at their bound")


async def test_a_plugin_renamed_under_reload_keeps_the_share_it_spent(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    plugins = tmp_path / "plugins"
    folder = write_namer(plugins)
    host = Host(plugins, config=FAST, reload=True)
    host._log_bridge.runners.share_entries = 60  # twenty names, three entries each
    async with host:
        await host.wait_ready(20)
        assert host.reloader is not None
        await eventually(host.reloader.watching.is_set)
        with watching("plugin") as records:
            await host.call("namer", "names", "first", 30)
            await told(records, "done first")
            assert host.log_metrics("namer").over_logger_budget > 0
            manifest = folder / "plugin.toml"
            manifest.write_text(manifest.read_text().replace('"namer"', '"renamed"'))
            await eventually(lambda: [p.id for p in host.plugins()] == ["renamed"])
            await host.wait_ready(20)
            await host.call("renamed", "names", "second", 10)
            await told(records, "done second")
        # The old id's state is gone; the new id spent nothing of a fresh allowance.
        assert "namer" not in host._log_bridge.runners
        assert len(host._log_bridge.runners) == 1
        assert host.log_metrics("renamed").over_logger_budget == 10
        on_base = [r for r in records.matching("plugin.renamed") if r.getMessage() == "named"]
        assert len(on_base) == 10


async def test_over_logger_budget_counts_records_on_both_sides_of_the_name_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection remembers this many names (and as many past the budget): small, so that a
    # test can fill it.
    monkeypatch.setattr(routing, "_MAX_NAMES", 15)
    plugins = tmp_path / "plugins"
    write_namer(plugins)
    host = Host(plugins, config=FAST)
    host._log_bridge.runners.share_entries = 30  # ten names
    async with host:
        await host.wait_ready(20)
        with watching("plugin.namer") as records:

            async def over_after(method: str, tag: str, count: int) -> int:
                before = host.log_metrics("namer").over_logger_budget
                await host.call("namer", method, tag, count)
                await told(records, f"done {tag}")
                return host.log_metrics("namer").over_logger_budget - before

            await over_after("names", "fill", 12)  # the share spent, names still remembered
            remembered = await over_after("repeat", "extras", 50)
            await over_after("names", "more", 20)  # past what the connection remembers
            forgotten = await over_after("repeat", "extras2", 50)
    assert (remembered, forgotten) == (50, 50)
