"""The ``isoplug`` command line: a thin synchronous shell over the async library.

- ``isoplug run PATH`` (a folder of plugins, or one plugin's folder) runs a
  :class:`~isoplug.Host` in the foreground until Ctrl-C or SIGTERM, showing every plugin's
  output live, attributed and coloured by plugin and level.
- ``isoplug demo`` runs the example plugins shipped with isoplug for about ten seconds.
- ``isoplug demo --protocol`` is the foundation demo: one host and one runner talking.
- ``isoplug new PATH`` makes a new plugin's folder (manifest, code, and a test that passes).
- ``isoplug schema PLUGIN_DIR`` prints the JSON Schema of a plugin's plugin.toml, for editors.

This module imports nothing of the command itself (:mod:`isoplug.cli.entry`) before
:func:`main` has forked PID 1's reaper (:mod:`isoplug.cli.init_process`): the reaper, which
lives as long as the container, then holds a bare interpreter, not the host's whole stack
(docs/benchmarks.md has the numbers).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from isoplug.cli.early_signals import EarlySignals
from isoplug.cli.init_process import reap_as_pid1
from isoplug.lazy_names import lazy_names

if TYPE_CHECKING:
    from isoplug.cli.console_format import ConsoleFormatter, use_colour

__all__ = ["ConsoleFormatter", "console_script", "main", "use_colour"]

#: isoplug.cli.signals.EXIT_INTERRUPTED, without importing it first (see main).
_EXIT_INTERRUPTED = 130
#: The commands that run a host, and so may make orphans: as PID 1 they get a reaper.
_HOSTING = ("run", "demo")


def main(argv: Sequence[str] | None = None, *, ending_process: bool = False) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``) names; its exit code.
    ``ending_process``: the process ends with the command (the console script, ``python -m
    isoplug``), so the stop signals stay ignored from the moment the exit code is decided
    to its end, when a repeat could only kill it; otherwise (a caller's process, which goes
    on) they are given back to the handlers they had."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = _command_name(arguments)
    # Before any thread starts (a fork copies one thread only), and before the command's
    # imports, which the reaper would carry for nothing.
    reaper = reap_as_pid1() if command in _HOSTING else None
    # Then at once: the command's imports take about a second on a loaded machine, and a stop
    # signal then must not take its default action (death by SIGTERM, a core dump).
    early = EarlySignals.take(command)
    try:
        from isoplug.cli.entry import run_command_line

        return run_command_line(arguments, reaper, early, ending_process=ending_process)
    except KeyboardInterrupt:
        # Ctrl-C (or, for new and schema, another stop signal) before a command took its
        # signals (while it imports, a schema's plugin imported): the operator asked to
        # stop, which needs no traceback.
        return _EXIT_INTERRUPTED
    finally:
        if early is not None:
            early.end(ending_process)


def _command_name(arguments: Sequence[str]) -> str | None:
    """The command ``arguments`` name: the first that is no option (``isoplug`` itself has
    none but ``--help`` and ``--version``, which end it before a command runs)."""
    return next((argument for argument in arguments if not argument.startswith("-")), None)


def console_script() -> int:
    """The ``isoplug`` console script and ``python -m isoplug``: :func:`main`, ending the
    process."""
    return main(ending_process=True)


__getattr__, __dir__ = lazy_names(
    __name__,
    {"ConsoleFormatter": "isoplug.cli.console_format", "use_colour": "isoplug.cli.console_format"},
    globals(),
    __all__,
)
