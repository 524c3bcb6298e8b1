"""The ``isoplug`` command line's arguments."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from isoplug import __version__
from isoplug.cli.demo import DEMO_DURATION, DEMO_READY_WITHIN
from isoplug.cli.running import BUILTIN_CAPABILITIES
from isoplug.cli.say import shown, shown_message, write_stderr
from isoplug.host.schema import IMPORT_TIMEOUT


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors sanitized: "unrecognized arguments" quotes the
    operator's words raw (an argument holding ESC would reach the terminal as one). Its
    subcommands' parsers are of this class too (argparse makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        # One write: see isoplug.cli.say.
        write_stderr(
            f"{self.format_usage()}{self.prog}: error: {shown_message(message)}"
            f"{_suggestion(message)}"
        )
        sys.exit(2)


def _suggestion(message: str) -> str:
    """For an invalid choice (a misspelled command, ``isoplug rn``): the nearest one."""
    typed = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if typed is None:
        return ""
    choices = [choice.strip().strip("'") for choice in typed[2].split(",")]
    close = difflib.get_close_matches(typed[1], choices, n=1)
    return f"; did you mean {shown(close[0])!r}?" if close else ""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; a usage error said with the usage of its command (a
    second PATH to run: run's usage, not isoplug's), exit code 2."""
    parser = build_parser()
    arguments, extra = parser.parse_known_args(argv)
    command = _COMMANDS[arguments.command]
    if extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    if arguments.command == "demo" and arguments.protocol:
        given = [
            option
            for option, value in (
                ("--plugins-dir", arguments.plugins_dir),
                ("--duration", arguments.duration),
            )
            if value is not None
        ]
        if given:
            command.error(
                f"--protocol shows one host and one runner of its own: it takes no "
                f"{' nor '.join(given)}"
            )
    if arguments.command == "demo" and arguments.duration is None:
        arguments.duration = DEMO_DURATION
    return arguments


#: Each command's parser, by name, as the last :func:`build_parser` made them.
_COMMANDS: dict[str, argparse.ArgumentParser] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="isoplug",
        description="Run plugins in isolated runner processes without losing their logs.",
    )
    parser.add_argument("--version", action="version", version=f"isoplug {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run",
        help="run a plugin, or the plugins of a directory, until Ctrl-C",
        description="Start one runner process per plugin (or per group) found in PATH, a "
        "folder of plugin folders or one plugin's folder (holding its plugin.toml); "
        "show their output live, restart them when they crash or hang, and stop them all "
        "cleanly on Ctrl-C, SIGTERM or SIGHUP (a second one, 0.3 s or more later, kills "
        "them at once). Capabilities offered to plugins: "
        + ", ".join(sorted(BUILTIN_CAPABILITIES))
        + ". The records go to stdout, isoplug's fatal errors to stderr. Exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in RUN_EXIT_CODES)
        + ".",
    )
    run.add_argument("plugins_dir", metavar="PATH", type=Path)
    run.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="a TOML file of configuration overrides, one table per plugin id "
        "([greeter] greeting = 'Hi'), merged over each plugin's [config]; read once, at "
        "start (--reload does not watch it)",
    )
    run.add_argument(
        "--reload",
        action="store_true",
        help="watch PATH: restart a plugin when its code changes, start new plugin folders, "
        "stop removed ones, read changed manifests again (needs isoplug[reload])",
    )
    run.add_argument(
        "--tui",
        action="store_true",
        help="show a live full-screen view instead of plain lines: one row per plugin "
        "(state, pid, uptime, restarts, last exit, records/s, drops, RSS, CPU) and a "
        "filterable log pane; keys restart a plugin, change its log level, pause its lines "
        "(needs isoplug[tui] and a terminal on stdout)",
    )
    _add_log_level(run)
    run.add_argument(
        "--plugin-log-level",
        default=None,
        type=_level,
        metavar="{" + ",".join(LEVELS) + "}",
        help="set every plugin's log level in its runner, over the log_level of its "
        "plugin.toml (default: each manifest's; --log-level only filters what is shown)",
    )
    _add_telemetry_options(run)
    demo = commands.add_parser(
        "demo",
        help="watch example plugins talk, crash, hang and recover (about 10 s)",
        description="Run the example plugins (a chatty one, one calling a host capability, "
        "one that crashes and is restarted, one that hangs and is detected) for about ten "
        "seconds, then stop them and print what happened to each. Exit code 1 when there is "
        f"nothing to run or the plugins are not ready within {DEMO_READY_WITHIN:g} s (the "
        "message says which, and why), 2 for a usage error.",
    )
    demo.add_argument(
        "--protocol",
        action="store_true",
        help="instead, show the wire protocol between one host and one runner",
    )
    demo.add_argument(
        "--duration",
        type=_positive_seconds,
        default=None,
        help="seconds to run, more than 0 (default: 10)",
    )
    demo.add_argument(
        "--plugins-dir",
        type=Path,
        default=None,
        help="the example plugins (default: the ones shipped with isoplug)",
    )
    _add_log_level(demo)
    _COMMANDS.update(run=run, demo=demo)
    new = commands.add_parser(
        "new",
        help="make a new plugin's folder: manifest, code and a test that passes",
        description="Make the folder PATH (its last part names the plugin and its module) "
        "holding plugin.toml, the plugin's code and a test of it using isoplug.testing. "
        "Then: isoplug run PATH, and python -m pytest PATH.",
    )
    # A text, not a Path: Path("") would be ".", and an empty name is told as such.
    new.add_argument("path", metavar="PATH")
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of a plugin's plugin.toml, its [config] included",
        description="Print the JSON Schema of PLUGIN_DIR's plugin.toml for editors (Taplo, "
        "VS Code's Even Better TOML): the manifest's fields, and under config the schema of "
        "the plugin's config_schema (imported in a process of its own, as a runner would).",
    )
    schema.add_argument("plugin_dir", metavar="PLUGIN_DIR", type=Path)
    schema.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=IMPORT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a plugin whose import takes longer (default: {IMPORT_TIMEOUT:g})",
    )
    _COMMANDS.update(new=new, schema=schema)
    return parser


#: ``isoplug run``'s exit codes, as its help says them (docs/operations.md has the whole
#: story; a test keeps the two lists alike).
RUN_EXIT_CODES = (
    (0, "stopped, nothing failed"),
    (1, "a plugin was skipped or failed (with --reload: at the end), or nothing to run"),
    (2, "unusable options or PATH"),
    (
        71,
        "the system refused the command something it needs: file descriptors, threads, a "
        "temporary folder with room",
    ),
    (74, "stdout could not be written"),
    (
        130,
        "killed by a second signal (or one that cut the wait for the OTLP collector or "
        "stdout short)",
    ),
    (141, "stdout was closed"),
)

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _level(text: str) -> str:
    """A log level, in any case; refused in the words the user typed."""
    if text.upper() not in LEVELS:
        close = difflib.get_close_matches(text.upper(), LEVELS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(LEVELS)}, in any case){hint}"
        )
    return text.upper()


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return seconds


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=None,
        type=_level,
        metavar="{" + ",".join(LEVELS) + "}",
        help="show only records at this level and above, the plugins' and isoplug's "
        "(default: each plugin's records as its log_level lets through, isoplug's from INFO)",
    )


def _add_telemetry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export every plugin's log records and isoplug's metrics over OTLP to this "
        "collector (http://127.0.0.1:4318 for OTLP/HTTP, :4317 for gRPC); default: "
        "OTEL_EXPORTER_OTLP_ENDPOINT if set, else no export (needs isoplug[otel]). Once "
        "the plugins stopped, the last records get 5 s at most (a signal then, or a second "
        "one before: none, exit 130)",
    )
    parser.add_argument(
        "--otlp-protocol",
        choices=["http/protobuf", "grpc"],
        help="the OTLP protocol (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help="serve the metrics for Prometheus at http://HOST:PORT/metrics (HOST defaults "
        "to 127.0.0.1; 0.0.0.0 to be scraped from other machines)",
    )
