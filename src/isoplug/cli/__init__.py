"""The ``isoplug`` command line: a thin synchronous shell over the async library.

- ``isoplug run PATH`` (a folder of plugins, or one plugin's folder) runs a
  :class:`~isoplug.Host` in the foreground until Ctrl-C or SIGTERM, showing every plugin's
  output live, attributed and coloured by plugin and level.
- ``isoplug demo`` runs the example plugins shipped with isoplug for about ten seconds.
- ``isoplug demo --protocol`` is the foundation demo: one host and one runner talking.
- ``isoplug new PATH`` makes a new plugin's folder (manifest, code, and a test that passes).
- ``isoplug schema PLUGIN_DIR`` prints the JSON Schema of a plugin's plugin.toml, for editors.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from collections.abc import Sequence

from isoplug._foundation_demo import run_demo
from isoplug.cli.console import (
    ConsoleFormatter,
    ConsoleHandler,
    configure_console_logging,
    finish_console,
    silence,
    use_colour,
)
from isoplug.cli.demo import DEMO_HEADER, example_plugins_dir, run_demo_plugins
from isoplug.cli.init_process import reap_as_pid1
from isoplug.cli.parser import parse_arguments
from isoplug.cli.running import run_command
from isoplug.cli.say import say_error
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

__all__ = ["ConsoleFormatter", "main", "use_colour"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``isoplug`` console script; returns the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before a command took its signals (while it imports, a schema's plugin
        # imported): the operator asked to stop, which needs no traceback.
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    _standard_streams()
    arguments = parse_arguments(argv)
    # Before any thread starts: a fork copies one thread only.
    reaper = reap_as_pid1() if arguments.command in _HOSTING else None
    # Before any thread starts too: each takes the mask of the thread that starts it.
    blocked = unblock_stop_signals()
    try:
        code = _command(arguments, blocked, reaper)
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


#: The commands that run a host, and so may make orphans: as PID 1 they get a reaper.
_HOSTING = ("run", "demo")


def _command(
    arguments: argparse.Namespace, blocked: tuple[signal.Signals, ...], reaper: int | None
) -> int:
    if arguments.command == "demo" and arguments.protocol:
        return run_demo()
    if arguments.command == "new":
        return new_plugin(arguments.path)
    if arguments.command == "schema":
        return print_schema(arguments.plugin_dir, arguments.timeout)
    signals = StopSignals()
    # From here to the process's end, no stop signal takes its default action.
    signals.hold()
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
    signals.settle()
    return code


def _demo(arguments: argparse.Namespace, console: ConsoleHandler, signals: StopSignals) -> int:
    plugins_dir = arguments.plugins_dir or example_plugins_dir()
    if plugins_dir is None:
        print(
            "isoplug demo: the example plugins were not found (neither in the installed "
            "package, isoplug/examples/plugins, nor in a source checkout, "
            "examples/plugins). Pass --plugins-dir DIR.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        is_folder = plugins_dir.is_dir()
    except PermissionError:
        is_folder = True  # one of its parents refuses a look: the host says which
    if not is_folder:
        # In run's words, for the same mistake.
        why = "is not a directory" if plugins_dir.exists() else "does not exist"
        say_error("demo", f"plugins directory {plugins_dir} {why}")
        return EXIT_USAGE
    duration = arguments.duration
    console.say(DEMO_HEADER)
    return run_until_stopped(
        lambda stop: run_demo_plugins(plugins_dir, duration, stop, console), signals=signals
    )
