"""The stderr tail of a runner process: lines from its pipe and from its log records, in the
order they were written, capped; the wait for its log connections to end is bounded; the words
by which a runner said it aborted itself are kept."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from isoplug.host.stderr_tail import MAX_TAIL_LINES, StderrTail, self_abort


def test_lines_are_quoted_in_the_order_they_were_written_whenever_they_came() -> None:
    tail = StderrTail()
    now = time.time()
    tail.add("read from the pipe", now - 1.0)
    # A record written before the pipe line, arriving after it (its log connection is slower).
    tail.add("first\nsecond", now - 2.0)
    tail.add("last")  # no time: now
    assert tail.quote() == "first | second | read from the pipe | last"


def test_a_time_still_to_come_or_not_a_number_counts_as_now() -> None:
    tail = StderrTail()
    tail.add("from the future", time.time() + 3600)
    tail.add("not a number", float("nan"))
    tail.add("the newest")
    assert tail.quote() == "from the future | not a number | the newest"


def test_only_the_newest_lines_are_kept() -> None:
    tail = StderrTail()
    now = time.time()
    for n in range(30):
        tail.add(f"line {n}", now - 100 + n)
    tail.add("too old to matter", now - 1000)
    quote = tail.quote()
    assert quote.split(" | ") == [f"line {n}" for n in range(30 - MAX_TAIL_LINES, 30)]


def test_the_wait_for_log_connections_is_bounded_and_ends_with_the_last() -> None:
    tail = StderrTail()
    assert tail.fed and tail.wait_fed(0)
    tail.feed_opened()
    tail.feed_opened()
    assert not tail.fed
    assert not tail.wait_fed(0.01)  # bounded: still open
    tail.feed_ended()
    assert not tail.fed
    ending = threading.Thread(target=tail.feed_ended)
    ending.start()
    assert tail.wait_fed(30)
    ending.join()


_DUMP = "Fatal Python error: Aborted\n\nCurrent thread 0x00007f (most recent call first):"
_ASSERTION = "python: native.c:42: check: Assertion `ok' failed."


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        # glibc's failed assert(), then faulthandler's dump of the SIGABRT it raised.
        (["started", _ASSERTION, _DUMP], _ASSERTION),
        (
            ["Fatal glibc error: malloc.c:2599 (sysmalloc): assertion failed", _DUMP],
            "Fatal glibc error: malloc.c:2599 (sysmalloc): assertion failed",
        ),
        # A SIGABRT from outside: faulthandler's dump, after whatever the runner last said.
        (["serving", "ValueError: not an assertion", _DUMP], None),
        ([_DUMP], None),
        # faulthandler off: no dump; glibc's (or libuv's) words are the last it wrote.
        (["isoplug runner: ... exits with code 6", _ASSERTION], _ASSERTION),
        # A child's words, after which the runner went on: not its own abort, dump or not.
        ([_ASSERTION, "serving on"], None),
        ([_ASSERTION, "serving on", _DUMP], None),
        (["serving on"], None),
    ],
)
def test_an_abort_is_the_runners_own_when_its_stderr_said_why_last_or_right_before_the_dump(
    lines: list[str], words: str | None
) -> None:
    tail = StderrTail()
    start = time.time() - 100  # one second apart, in order, whatever the wall clock does
    for index, line in enumerate(lines):
        tail.add(line, start + index)
    assert tail.abort_words == words
    assert self_abort(tail, -signal.SIGABRT, None) == words
    assert self_abort(tail, -signal.SIGABRT, "its event loop did not run") is None
    assert self_abort(tail, -signal.SIGKILL, None) is None


def test_a_fatal_error_of_pythons_own_is_an_abort_of_the_runners_own() -> None:
    tail = StderrTail()
    tail.add("Fatal Python error: _enter_buffered_busy: could not acquire lock\nPython runtime")
    assert self_abort(tail, -signal.SIGABRT, None) == (
        "Fatal Python error: _enter_buffered_busy: could not acquire lock"
    )


def test_a_record_written_before_the_last_words_but_come_after_them_takes_nothing_back() -> None:
    tail = StderrTail()
    tail.add(_ASSERTION, time.time() - 1.0)
    # Sent on its log connection before the abort, read after the pipe's line.
    tail.add("a record of its stderr stream", time.time() - 2.0)
    assert self_abort(tail, -signal.SIGABRT, None) == _ASSERTION
