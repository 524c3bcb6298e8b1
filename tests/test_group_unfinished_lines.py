"""In a group runner the members share the loop's thread, and so its line buffer: text one
member left unfinished never joins another member's line, and stays its writer's wherever it
ends (another member's write or flush, the runner's exit); a traceback held for a chain never
takes in another member's output."""

from __future__ import annotations

import logging
from pathlib import Path

from isoplug import Host
from tests.plugins_fixtures import FAST, copy_plugins, running
from tests.record_waiter import RecordWaiter, watching


def printed(waiter: RecordWaiter, stream: str = "stdout") -> list[tuple[str, str]]:
    """(logger, message) of every line the runner's members printed to ``stream``, in order."""
    return [(r.name, r.getMessage()) for r in waiter.records if r.name.rpartition(".")[2] == stream]


async def test_an_unfinished_line_never_joins_another_members_line(tmp_path: Path) -> None:
    """duo_a's unfinished line, then duo_b's line on the same loop thread: two lines, each
    its writer's. duo_a's line finished by duo_a later stays one line; an empty print() of
    duo_b after duo_a's unfinished text is duo_b's empty line."""
    async with running(tmp_path, "duo_a", "duo_b") as (host, waiter):
        assert host.plugin("duo_a").pid == host.plugin("duo_b").pid
        await host.call("duo_a", "write", "a: unfinished")
        await host.call("duo_b", "write", "b: whole\n")
        await host.call("duo_a", "write", "a: starts, ")
        await host.call("duo_a", "write", "and ends\n")
        await host.call("duo_a", "write", "a: again unfinished")
        await host.call("duo_b", "write", "\n")
        await host.call("duo_b", "write", "b: last\n")
        await waiter.wait_for_record(stream="stdout", text="b: last")
    assert printed(waiter) == [
        ("plugin.duo_a.stdout", "a: unfinished"),
        ("plugin.duo_b.stdout", "b: whole"),
        ("plugin.duo_a.stdout", "a: starts, and ends"),
        ("plugin.duo_a.stdout", "a: again unfinished"),
        ("plugin.duo_b.stdout", ""),
        ("plugin.duo_b.stdout", "b: last"),
    ]


async def test_an_unfinished_line_stays_its_writers_at_anothers_flush_and_at_exit(
    tmp_path: Path,
) -> None:
    """duo_a's unfinished line emitted by duo_b's flush(), and one left until the runner
    stops: both duo_a's, not duo_b's nor the group's."""
    async with running(tmp_path, "duo_a", "duo_b") as (host, waiter):
        await host.call("duo_a", "write", "a: flushed by b", stream="stderr")
        await host.call("duo_b", "flush", stream="stderr")
        await waiter.wait_for_record(stream="stderr", text="a: flushed by b")
        await host.call("duo_a", "write", "a: left at exit")
        await host.stop("duo_b")
        await host.stop("duo_a")
        await waiter.wait_for_record(stream="stdout", text="a: left at exit")
    assert printed(waiter, "stderr") == [("plugin.duo_a.stderr", "a: flushed by b")]
    assert printed(waiter) == [("plugin.duo_a.stdout", "a: left at exit")]


async def test_an_unfinished_line_written_at_import_stays_the_importers(tmp_path: Path) -> None:
    """duo_a writes an unfinished line as its module is imported, duo_b prints a line as its
    own is: each line its writer's, whichever member the runner imports first."""
    plugins = copy_plugins(tmp_path, "duo_a", "duo_b")
    for name, text in (("duo_a", "sys.stdout.write('a: at import')"), ("duo_b", "print('b')")):
        module = plugins / name / f"{name}_plugin.py"
        module.write_text(module.read_text() + f"\n{text}\n")
    with watching("plugin") as waiter:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            await waiter.wait_for_record(stream="stdout", text="b")
        await waiter.wait_for_record(stream="stdout", text="a: at import")
    assert sorted(printed(waiter)) == [
        ("plugin.duo_a.stdout", "a: at import"),
        ("plugin.duo_b.stdout", "b"),
    ]


async def test_a_held_traceback_never_takes_in_another_members_traceback(
    tmp_path: Path,
) -> None:
    """Both members print a traceback in their handlers of one event, one right after the
    other on the loop thread: the first, held for a chained one, is not continued by the
    second. Two ERROR records, each with its member's traceback, on its member's stderr."""
    async with running(tmp_path, "duo_a", "duo_b") as (host, waiter):
        await host.publish("print_error")
        await waiter.wait_until(
            lambda: all(
                waiter.select(stream="stderr", text=f"ValueError: {name} failed")
                for name in ("duo_a", "duo_b")
            )
        )
    tracebacks = sorted(
        (r.name, r.levelno, r.getMessage().splitlines()[-1].strip())
        for r in waiter.records
        if r.name.endswith(".stderr")
    )
    assert tracebacks == [
        ("plugin.duo_a.stderr", logging.ERROR, "ValueError: duo_a failed"),
        ("plugin.duo_b.stderr", logging.ERROR, "ValueError: duo_b failed"),
    ]
