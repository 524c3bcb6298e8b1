"""The ``isoplug`` command once it knows it is not PID 1's reaper (see :mod:`isoplug.cli`):
its streams made usable, its arguments parsed, then the command run; its exit code."""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from collections.abc import Sequence

from isoplug._foundation_demo import configure_demo_logging, run_demo_host
from isoplug.cli.console import (
    ConsoleHandler,
    configure_console_logging,
    finish_console,
    silence,
)
from isoplug.cli.demo import DEMO_HEADER, example_plugins_dir, run_demo_plugins
from isoplug.cli.early_signals import EarlySignals
from isoplug.cli.parser import parse_arguments
from isoplug.cli.running import run_command
from isoplug.cli.say import say_error, shown, write_stderr
from isoplug.cli.signals import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_SYSTEM_REFUSED,
    EXIT_USAGE,
    StopSignals,
    run_until_stopped,
    say_unblocked,
)
from isoplug.cli.tools import new_plugin, print_schema
from isoplug.errors import NoTemporaryFolder
from isoplug.host.shortage import shortage
from isoplug.host.standard_fds import fill_standard_descriptors
from isoplug.log_guard import guarded_logger
from isoplug.runner.signal_mask import unblock_stop_signals

__all__ = ["run_command_line"]


def run_command_line(
    argv: Sequence[str] | None,
    reaper: int | None,
    early: EarlySignals | None = None,
    *,
    ending_process: bool = False,
) -> int:
    """The command ``argv`` (default: ``sys.argv[1:]``) names, to its end; its exit code.
    ``reaper``: the pid of PID 1's reaper, when this process was forked from it; ``early``:
    the signals taken while the command imported itself, handed over to the command's own
    handlers; ``ending_process``: see :func:`isoplug.cli.main`."""
    _standard_streams()
    arguments = parse_arguments(argv)
    # Before any thread starts: each takes the mask of the thread that starts it.
    blocked = unblock_stop_signals()
    try:
        code = _command(arguments, blocked, reaper, early, ending_process)
        # What is still buffered goes now, while a closed pipe can still be told apart.
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of stdout is gone (`isoplug schema DIR | head`): stop quietly, as
        # other commands do, with the code a shell shows for a command SIGPIPE ended.
        silence(sys.stdout)
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        # A limit too low for the command itself (ulimit -n 8: its event loop cannot be
        # made), no temporary folder with room for its sockets: the operator's to fix, said
        # as such, not a traceback nor a usage error.
        why = _shortage_in(exc)
        if why is None:
            raise
        say_error(arguments.command, f"cannot go on: {why}")
        return EXIT_SYSTEM_REFUSED
    return code


def _shortage_in(error: BaseException) -> str | None:
    """What the system ran out of (descriptors, threads, room in every temporary folder),
    when ``error`` or an error it was raised from or while handling says so (uvloop's loop,
    failing to close after its own failure, raises "Cannot close a running event loop" over
    "Too many open files")."""
    pending, seen = [error], set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        why = str(error) if isinstance(error, NoTemporaryFolder) else shortage(error)
        if why is not None:
            return why
        pending.extend(e for e in (error.__context__, error.__cause__) if e is not None)
    return None


def _standard_streams() -> None:
    """Make stdout and stderr usable whatever the command was started with. Closed (``>&-``,
    ``2>&-``): Python made them None, and the descriptors are free for the next socket (see
    :mod:`isoplug.host.standard_fds`); they are ``/dev/null`` from here on, as the one who
    closed them meant. An encoding that lacks a character (``LC_ALL=C``): an escape
    (``\\u2603``) is printed instead of the line failing."""
    fill_standard_descriptors()
    for name, descriptor in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if stream is None:
            stream = open(  # noqa: SIM115 # the process's own, for as long as it runs
                descriptor, "w", encoding="utf-8", errors="backslashreplace", closefd=False
            )
            setattr(sys, name, stream)
        elif isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _command(
    arguments: argparse.Namespace,
    blocked: tuple[signal.Signals, ...],
    reaper: int | None,
    early: EarlySignals | None,
    ending_process: bool,
) -> int:
    if arguments.command == "new":
        return new_plugin(arguments.path)
    if arguments.command == "schema":
        return print_schema(arguments.plugin_dir, arguments.timeout)
    # From here to the process's end the command's own handlers take the stop signals (those
    # that came while it imported itself too): none takes its default action.
    signals = StopSignals(early)
    signals.hold()
    if arguments.command == "demo" and arguments.protocol:
        configure_demo_logging()
        code = run_until_stopped(run_demo_host, signals=signals)
        _end_signals(signals, ending_process)
        return EXIT_INTERRUPTED if signals.cut_short or signals.killed else code
    console = configure_console_logging(arguments.log_level, sys.stdout)
    say_unblocked(blocked)
    if reaper is not None:
        guarded_logger("isoplug.cli").info(
            "isoplug was started as PID 1 (a container without --init): PID %d now only "
            "reaps orphaned processes and passes signals on to the command, pid %d",
            reaper,
            os.getpid(),
        )
    if arguments.command == "run":
        code = run_command(arguments, console, signals)
    elif arguments.command == "demo":
        code = _demo(arguments, console, signals)
    else:
        raise AssertionError(f"unhandled command {arguments.command!r}")
    code = finish_console(console, signals, code)
    _end_signals(signals, ending_process)
    return code


def _end_signals(signals: StopSignals, ending_process: bool) -> None:
    """The exit code is decided: the signals ignored to the process's end, or given back to a
    caller's process, which goes on."""
    if ending_process:
        signals.settle()
    else:
        signals.release()


def _demo(arguments: argparse.Namespace, console: ConsoleHandler, signals: StopSignals) -> int:
    plugins_dir = arguments.plugins_dir or example_plugins_dir()
    if plugins_dir is None:
        write_stderr(
            "isoplug demo: the example plugins were not found (neither in the installed "
            "package, isoplug/examples/plugins, nor in a source checkout, "
            "examples/plugins). Pass --plugins-dir DIR."
        )
        return EXIT_USAGE
    try:
        is_folder = plugins_dir.is_dir()
    except PermissionError:
        is_folder = True  # one of its parents refuses a look: the host says which
    if not is_folder:
        # In run's words, for the same mistake.
        why = "is not a directory" if plugins_dir.exists() else "does not exist"
        say_error("demo", f"plugins directory {shown(plugins_dir)} {why}")
        return EXIT_USAGE
    duration = arguments.duration
    console.say(DEMO_HEADER)
    return run_until_stopped(
        lambda stop: run_demo_plugins(plugins_dir, duration, stop, console), signals=signals
    )
