"""A group runner's threads and pool work run as the member whose code started them
(:mod:`isoplug.runner.thread_sources`), in this process: the patched ``Thread.start`` and
``ThreadPoolExecutor.submit`` are put back after each test."""

from __future__ import annotations

import concurrent.futures
import logging
import logging.handlers
import queue
import threading

import pytest

from isoplug.logs.sources import attributed_to, current_source
from isoplug.runner import thread_sources
from isoplug.runner.thread_sources import attribute_threads


@pytest.fixture(autouse=True)
def attributing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded first, so that the teardown restores the originals.
    monkeypatch.setattr(threading.Thread, "start", threading.Thread.start)
    monkeypatch.setattr(
        concurrent.futures.ThreadPoolExecutor,
        "submit",
        concurrent.futures.ThreadPoolExecutor.submit,
    )
    attribute_threads()
    attribute_threads()  # idempotent


def seen_in_thread(start: threading.Thread, box: list[str | None]) -> list[str | None]:
    start.start()
    start.join(10)
    return box


def test_a_thread_a_member_starts_is_its_own_for_its_whole_life() -> None:
    box: list[str | None] = []

    def run() -> None:
        box.append(current_source.get())
        raise LookupError("thread failed")

    hooked: list[str | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: hooked.append(current_source.get())
    try:
        with attributed_to("plugin.a"):
            thread = threading.Thread(target=run)
        # Whose code starts it counts, not whose made it.
        with attributed_to("plugin.b"):
            thread.start()
        thread.join(10)
    finally:
        threading.excepthook = previous
    assert box == ["plugin.b"] and hooked == ["plugin.b"]


def test_a_subclass_and_a_timer_are_attributed_too() -> None:
    box: list[str | None] = []

    class Worker(threading.Thread):
        def run(self) -> None:
            box.append(current_source.get())

    threads = [Worker(), threading.Timer(0, lambda: box.append(current_source.get()))]
    with attributed_to("plugin.a"):
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join(10)
    assert box == ["plugin.a", "plugin.a"]


def test_a_thread_started_by_no_member_stays_nobodys() -> None:
    box: list[str | None] = []
    thread = threading.Thread(target=lambda: box.append(current_source.get()))
    assert seen_in_thread(thread, box) == [None]
    assert not isinstance(thread.run, thread_sources.RunAs)


def test_pool_work_is_its_submitters_whoever_started_the_pools_thread() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with attributed_to("plugin.a"):
            first = pool.submit(current_source.get).result(10)
        with attributed_to("plugin.b"):
            second = pool.submit(current_source.get).result(10)
        # The runner's own work, in the thread a's submit started: nobody's.
        third = pool.submit(current_source.get).result(10)
    assert (first, second, third) == ("plugin.a", "plugin.b", None)


def test_threads_that_serve_every_member_are_nobodys() -> None:
    """A QueueListener's thread, and isoplug's own, started from a member's code."""
    seen: list[str | None] = []

    class Note(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(current_source.get())

    records: queue.Queue[logging.LogRecord] = queue.Queue()
    listener = logging.handlers.QueueListener(records, Note())
    with attributed_to("plugin.a"):
        listener.start()
    records.put(logging.makeLogRecord({"msg": "x"}))
    listener.stop()
    assert seen == [None]

    ours = threading.Thread(target=thread_sources.attribute_threads)
    with attributed_to("plugin.a"):
        ours.start()
    ours.join(10)
    assert not isinstance(ours.run, thread_sources.RunAs)
