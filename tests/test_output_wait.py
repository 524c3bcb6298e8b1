"""How long a runner's event loop waited for the host to read its output: the looks' account
(sans-IO), and the kernel's word on a real thread blocked writing to a full pipe."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from isoplug.runner.output_wait import (
    FUTEX,
    READY,
    SLEEPING,
    WRITING,
    OutputWaits,
    ThreadOutputWait,
    parse_syscall,
    syscall_numbers,
)
from tests.record_waiter import wait_blocking

TICK = 0.1


def looked(*states: str | None, start: float = 0.0) -> OutputWaits:
    """Looks a tick apart from ``start``, the first a tick after it."""
    waits = OutputWaits()
    for n, state in enumerate(states, 1):
        waits.look(start + n * TICK, state)
    return waits


def test_writes_seen_at_consecutive_looks_count_the_time_between_them() -> None:
    waits = looked(SLEEPING, WRITING, WRITING, WRITING, SLEEPING, WRITING)
    # W at 0.2, 0.3, 0.4: 0.2 s; the lone W at 0.6 counts nothing (a sleep came between).
    assert waits.waited(0.0, 0.6, TICK, ran=0.0) == pytest.approx(0.2)
    assert waits.waited(0.35, 0.6, TICK, ran=0.0) == pytest.approx(0.05)


def test_a_loop_that_only_wrote_and_waited_for_a_cpu_is_judged_by_its_cpu_time() -> None:
    """Writes with CPU waits (R) and GIL waits (F) between them, no other sleep: from the
    block's start to a tick after the last write, less the time it ran."""
    waits = looked(WRITING, READY, WRITING, FUTEX, READY, WRITING, None, WRITING)
    assert waits.waited(0.05, 0.8, TICK, ran=0.1) == pytest.approx(0.8 - 0.05 - 0.1)
    # Its time on a CPU is its own; unknown, only the consecutive looks count.
    assert waits.waited(0.05, 0.8, TICK, ran=0.75) == pytest.approx(0.0)
    assert waits.waited(0.05, 0.8, TICK, ran=None) == pytest.approx(0.0)


def test_a_loop_that_blocks_on_a_lock_after_its_writes_counts_from_its_last_write() -> None:
    """A deadlock after a flood is the plugin's: only the flood is excused, so the blocked
    time past it grows until the loop is hung."""
    waits = looked(WRITING, WRITING, WRITING, FUTEX, FUTEX, FUTEX, FUTEX, FUTEX, FUTEX)
    assert waits.waited(0.05, 0.9, TICK, ran=0.0) == pytest.approx(0.3 + TICK - 0.05)


def test_a_sleep_during_the_block_leaves_only_the_consecutive_writes() -> None:
    waits = looked(WRITING, WRITING, SLEEPING, READY, WRITING, READY, WRITING)
    assert waits.waited(0.05, 0.7, TICK, ran=0.0) == pytest.approx(0.1)
    # A sleep before the block began is not the block's.
    assert waits.waited(0.35, 0.7, TICK, ran=0.0) == pytest.approx(0.7 - 0.35)


def test_no_write_seen_is_no_wait() -> None:
    waits = looked(READY, FUTEX, READY, None)
    assert waits.waited(0.0, 0.4, TICK, ran=0.0) == 0.0


def test_syscall_lines_are_read_as_the_call_and_its_first_argument() -> None:
    assert parse_syscall(b"1 0x2 0x7f4b024d2000 0x20000 0x0 0x0 0x0 0x7ffe 0x7f4b\n") == (1, 2)
    assert parse_syscall(b"-1 0x7ffe0a5b1da8 0x7f4b0264e2ad\n") == (-1, 0x7FFE0A5B1DA8)
    assert parse_syscall(b"running\n") is None
    assert parse_syscall(b"") is None
    assert parse_syscall(b"x y\n") is None
    assert syscall_numbers("x86_64") == (frozenset({1, 20}), 202)
    assert syscall_numbers("aarch64") == (frozenset({64, 66}), 98)
    assert syscall_numbers("sparc64") is None


@contextmanager
def thread_writing_to(fd: int) -> Iterator[ThreadOutputWait]:
    """A thread that looks at itself, then writes 1 MiB to ``fd``, a pipe nobody reads: its
    write waits until the test closes the read end."""
    opened: list[ThreadOutputWait] = []
    ready = threading.Event()

    def write() -> None:
        opened.append(ThreadOutputWait(fds=(fd,)))
        ready.set()
        # The read end's close ends the write: with what it wrote so far, or BrokenPipeError.
        with contextlib.suppress(BrokenPipeError):
            os.write(fd, b"x" * (1 << 20))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield opened[0]
    finally:
        opened[0].close()
        thread.join(10)
        assert not thread.is_alive()


@pytest.mark.skipif(
    not Path("/proc/thread-self/syscall").exists() or syscall_numbers() is None,
    reason="no /proc/<pid>/syscall here",
)
def test_a_thread_blocked_writing_to_its_output_pipe_is_seen_writing() -> None:
    read_end, write_end = os.pipe()
    try:
        with thread_writing_to(write_end) as output:
            assert output.known
            wait_blocking(lambda: output.state() == WRITING, 10)
            # Once the number names another pipe (a plugin put it there), the write waits for
            # that pipe's reader, not the host.
            other_read, other_write = os.pipe()
            saved = os.dup(write_end)
            os.dup2(other_write, write_end)
            try:
                wait_blocking(lambda: output.state() == SLEEPING, 10)
            finally:
                os.dup2(saved, write_end)
                for fd in (saved, other_read, other_write):
                    os.close(fd)
            assert output.state() == WRITING
            os.close(read_end)
            read_end = -1
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def test_a_descriptor_that_is_no_pipe_is_never_waited_for(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as file:
        assert not ThreadOutputWait(fds=(file.fileno(),)).known
