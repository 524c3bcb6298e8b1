"""``python -m isoplug.runner``: a runner process, started by the host's supervisor.

It reads one JSON line (a :class:`~isoplug.control.Bootstrap`) from stdin, which the host keeps
open as the runner's lifeline (:mod:`isoplug.runner.lifeline`), and runs
:func:`~isoplug.runner.session.run_runner`. Not meant to be started by hand.

The line holds the runner's tokens. It is read from file descriptor 0 straight into a buffer
that is zeroed once decoded (``sys.stdin`` would keep a copy in a buffer of its own), and only
the decoded :class:`~isoplug.control.Bootstrap` stays referenced: the forwarding handler keeps
the log token, and :func:`~isoplug.runner.session.run_runner` forgets the control token once
connected. Python cannot zero an immutable string, so freed copies may stay in memory until
reused: this shortens the time a token is there to read, it does not stop a process that may
read this one's memory (the host's kernel-pid checks are what refuse it).
"""

from __future__ import annotations

import faulthandler
import os
import sys

import msgspec

from isoplug.control import EXIT_BAD_BOOTSTRAP, EXIT_NO_THREAD, TERMINATE_NOTICE, Bootstrap
from isoplug.control.interpreter_only import give_back
from isoplug.log_guard import guarded_logger
from isoplug.runner import eventloop
from isoplug.runner.lifeline import hold_lifeline
from isoplug.runner.loader import drop_working_directory
from isoplug.runner.logging_setup import capture_python_output, configure_runner_logging
from isoplug.runner.outside_stop import end_if_only_signalled, host_stops
from isoplug.runner.own_threads import say_no_thread
from isoplug.runner.session import run_runner
from isoplug.runner.signal_mask import unblock_stop_signals
from isoplug.runner.vital_fds import vital
from isoplug.thread_limits import cannot_start_thread

#: The bootstrap is a few hundred bytes per plugin; a line longer than this is not one.
_MAX_BOOTSTRAP_BYTES = 1024 * 1024


def main() -> int:
    try:
        return _run_main()
    except RuntimeError as exc:
        # One of the runner's own threads (its lifeline, log forwarding, health checks): a
        # plugin's code never raises this far (its import, setup and calls are caught).
        if not cannot_start_thread(exc):
            raise
        say_no_thread(exc)
        return EXIT_NO_THREAD


def _run_main() -> int:
    # A host started with them blocked passes its mask on; the host's SIGTERM, when it must
    # end a runner that does not exit, would wait for its SIGKILL. Before any thread starts.
    blocked = unblock_stop_signals()
    # A fatal crash (segfault in a C extension) prints every thread's stack on stderr, which
    # the host captures and attributes to this runner. Enabled before sys.stderr is replaced
    # (capture_python_output): it keeps writing to the real file descriptor 2.
    faulthandler.enable()
    # Before any plugin code: what the host set for this interpreter alone (isoplug's import
    # folder on PYTHONPATH) must not reach the programs a plugin starts.
    try:
        give_back()
    except ValueError as exc:
        print(f"isoplug runner: {exc}", file=sys.stderr)
        return EXIT_BAD_BOOTSTRAP
    buffer = bytearray(_MAX_BOOTSTRAP_BYTES)
    try:
        size, filled = _read_line_into(buffer)
        if filled > size + 1:
            # Read with the line: the host's notices that it began stopping the runner (see
            # isoplug.runner.outside_stop), come before the lifeline's thread could read them.
            host_stops(terminating=TERMINATE_NOTICE in buffer[size + 1 : filled])
        with memoryview(buffer) as view:
            bootstrap = msgspec.json.decode(view[:size], type=Bootstrap)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(
            f"isoplug runner: expected a bootstrap line on stdin (started by hand?): {exc}",
            file=sys.stderr,
        )
        return EXIT_BAD_BOOTSTRAP
    finally:
        buffer[:] = bytes(len(buffer))  # same length: overwritten in place
    sys.stdin.close()  # fd 0 stays open: it is the lifeline
    # Before any plugin code: from here on, the runner dies with its host.
    hold_lifeline()
    # fd 0 is /dev/null now: a plugin's input() or sys.stdin.read() sees the end of input
    # (EOFError, ""), as in any process without a terminal, not a closed file.
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    setattr(sys, "__stdin__", sys.stdin)  # noqa: B010 # typeshed's Final, not Python's
    if configure_runner_logging(bootstrap) is not None:
        # Without forwarding, stdout and stderr stay the pipes the host reads.
        capture_python_output(bootstrap.stdio)
    if blocked:
        guarded_logger("isoplug.runner").debug(
            "%s blocked in the signal mask the runner started with (its host's): unblocked",
            ", ".join(signum.name for signum in blocked),
        )
    # The coroutine holds the only reference left, which it drops once connected.
    runner = run_runner(bootstrap)
    del bootstrap
    # uvloop when installed (see isoplug.runner.eventloop).
    try:
        code = eventloop.run(runner, wrap_factory=vital.noting_loop)
    except OSError:
        # asyncio's poll fails so once a plugin closed the loop's descriptors: exit saying so.
        vital.exit_if_lost()
        raise
    if code == 0:
        # A stop that a SIGTERM from outside alone asked for ends by it (isoplug.runner.
        # outside_stop); any other code says more than the signal would.
        end_if_only_signalled()
    return code


def _read_line_into(buffer: bytearray) -> tuple[int, int]:
    """Read stdin into ``buffer`` up to the first newline, the end or a full buffer; return
    how many bytes hold the line, and how many were read (what came after it too)."""
    filled = 0
    with memoryview(buffer) as view:
        while filled < len(buffer):
            count = os.readv(0, [view[filled:]])
            if count == 0:
                return filled, filled
            newline = buffer.find(b"\n", filled, filled + count)
            filled += count
            if newline >= 0:
                return newline, filled
    return filled, filled


if __name__ == "__main__":
    drop_working_directory()
    sys.exit(main())
