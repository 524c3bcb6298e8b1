"""The ``isoplug`` command line: a thin synchronous shell over the async library.

- ``isoplug run PATH`` (a folder of plugins, or one plugin's folder) runs a
  :class:`~isoplug.Host` in the foreground until Ctrl-C or SIGTERM, showing every plugin's
  output live, attributed and coloured by plugin and level.
- ``isoplug demo`` runs the example plugins shipped with isoplug for about ten seconds.
- ``isoplug demo --protocol`` is the foundation demo: one host and one runner talking.
- ``isoplug new PATH`` makes a new plugin's folder (manifest, code, and a test that passes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from isoplug import __version__
from isoplug._foundation_demo import run_demo
from isoplug.errors import IsoplugError
from isoplug.host import Host, SupervisorConfig
from isoplug.host.registry import plugins_dir_for
from isoplug.runner import eventloop

__all__ = ["main"]

#: Capabilities the CLI's host offers to plugins that are granted them.
BUILTIN_CAPABILITIES: dict[str, Callable[..., Any]] = {"clock.now": time.time}
#: How long ``isoplug demo`` lets the example plugins run: long enough to see a crash,
#: a restart and a hang being detected, short enough to watch.
DEMO_DURATION = 10.0
#: Exit code after Ctrl-C interrupted something that was not a clean stop.
_EXIT_INTERRUPTED = 130

_RESET = "\033[0m"
_DIM = "\033[2m"
_BOLD = "\033[1m"
_PLUGIN_COLOURS = ("\033[36m", "\033[35m", "\033[34m", "\033[32m", "\033[96m", "\033[95m")
_LEVEL_COLOURS = {
    logging.DEBUG: _DIM,
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}
#: Width of the source column (plugin id or "isoplug"): most ids fit, longer ones push.
_SOURCE_WIDTH = 13
#: Width of the stream-or-level column ("stdout", "stderr", "warning", "critical").
_LABEL_WIDTH = 8
#: What ``isoplug demo`` prints over its columns.
DEMO_HEADER = (
    "columns: time, source (a plugin's id, or isoplug: the host), stdout/stderr (a line the "
    "plugin printed) or the record's level, message"
)


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ConsoleFormatter(logging.Formatter):
    """One line per record: time, source (the plugin id), stream or level, message.

    Records of ``plugin.<id>...`` are attributed to ``<id>``; the host's own records to
    ``isoplug``. Continuation lines (tracebacks) are indented under the message.
    """

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        if parts[0] == "plugin" and len(parts) > 1:
            source = parts[1]
            kind = parts[2] if len(parts) > 2 and parts[2] in ("stdout", "stderr") else "log"
        else:
            source = "isoplug"
            kind = "host"
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        stamp += f".{int(record.msecs):03d}"
        # One column, one meaning: a plugin's printed lines say their stream; every logging
        # record (the plugin's or the host's) says its level.
        label = kind if kind in ("stdout", "stderr") else record.levelname.lower()
        head_plain = f"{stamp} {source:<{_SOURCE_WIDTH}} {label:<{_LABEL_WIDTH}} "
        lines = message.splitlines() or [""]
        indent = " " * len(head_plain)
        if not self.colour:
            return head_plain + f"\n{indent}".join(lines)
        source_colour = _BOLD if source == "isoplug" else _colour_of(source)
        level_colour = _LEVEL_COLOURS.get(record.levelno, "")
        head = (
            f"{_DIM}{stamp}{_RESET} {source_colour}{source:<{_SOURCE_WIDTH}}{_RESET} "
            f"{_DIM}{label:<{_LABEL_WIDTH}}{_RESET} "
        )
        body = f"\n{indent}".join(lines)
        return head + (f"{level_colour}{body}{_RESET}" if level_colour else body)


def _colour_of(source: str) -> str:
    # crc32, not hash(): the same plugin keeps its colour from one run to the next.
    return _PLUGIN_COLOURS[zlib.crc32(source.encode()) % len(_PLUGIN_COLOURS)]


def _configure_console_logging(level: str, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(colour=use_colour(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        "cleanly on Ctrl-C or SIGTERM. Capabilities offered to plugins: "
        + ", ".join(sorted(BUILTIN_CAPABILITIES))
        + ".",
    )
    run.add_argument("plugins_dir", metavar="PATH", type=Path)
    _add_log_level(run)
    _add_telemetry_options(run)
    demo = commands.add_parser(
        "demo",
        help="watch example plugins talk, crash, hang and recover (about 10 s)",
        description="Run the example plugins (a chatty one, one calling a host capability, "
        "one that crashes and is restarted, one that hangs and is detected) for about ten "
        "seconds, then stop them and print what happened to each.",
    )
    demo.add_argument(
        "--protocol",
        action="store_true",
        help="instead, show the wire protocol between one host and one runner",
    )
    demo.add_argument(
        "--duration", type=float, default=DEMO_DURATION, help="seconds to run (default: 10)"
    )
    demo.add_argument(
        "--plugins-dir",
        type=Path,
        default=None,
        help="the example plugins (default: the ones shipped with isoplug)",
    )
    _add_log_level(demo)
    new = commands.add_parser(
        "new",
        help="make a new plugin's folder: manifest, code and a test that passes",
        description="Make the folder PATH (its last part names the plugin and its module) "
        "holding plugin.toml, the plugin's code and a test of it using isoplug.testing. "
        "Then: isoplug run PATH, and python -m pytest PATH.",
    )
    new.add_argument("path", metavar="PATH", type=Path)
    return parser


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="show records at this level and above (default: INFO)",
    )


def _add_telemetry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export every plugin's log records and isoplug's metrics over OTLP to this "
        "collector (http://127.0.0.1:4318 for OTLP/HTTP, :4317 for gRPC); default: "
        "OTEL_EXPORTER_OTLP_ENDPOINT if set, else no export (needs isoplug[otel])",
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


@contextlib.contextmanager
def _telemetry(arguments: argparse.Namespace) -> Iterator[object | None]:
    """The OpenTelemetry export the options ask for, for the duration of the block (an
    object, possibly ``False`` when none is asked for); None when it cannot start (said on
    stderr)."""
    endpoint = arguments.otlp_endpoint
    from_environment = any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    )
    otlp = endpoint is not None or from_environment
    if arguments.otlp_protocol and not otlp:
        print(
            "isoplug run: --otlp-protocol needs --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)",
            file=sys.stderr,
        )
        yield None
        return
    port_text = arguments.metrics_port
    if not otlp and port_text is None:
        yield False
        return
    host, port = "127.0.0.1", None
    if port_text is not None:
        host_text, _, number = port_text.rpartition(":")
        if not number.isdigit() or int(number) > 65535:
            print(
                f"isoplug run: --metrics-port wants [HOST:]PORT, got {port_text!r}", file=sys.stderr
            )
            yield None
            return
        host, port = host_text.strip("[]") or host, int(number)
    try:
        import isoplug.otel

        telemetry = isoplug.otel.export(
            endpoint,
            arguments.otlp_protocol,
            service_name=None if _service_named_by_environment() else "isoplug",
            otlp=otlp,
            metrics_port=port,
            metrics_host=host,
            join=False,
        )
    except (RuntimeError, ValueError) as exc:
        print(f"isoplug run: {exc}", file=sys.stderr)
        yield None
        return
    if telemetry.metrics_address is not None:
        logging.getLogger("isoplug.cli").info(
            "metrics for Prometheus at http://%s:%d/metrics", *telemetry.metrics_address
        )
    try:
        yield telemetry
    finally:
        telemetry.shutdown()


def _service_named_by_environment() -> bool:
    attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return bool(os.environ.get("OTEL_SERVICE_NAME")) or any(
        part.split("=", 1)[0].strip() == "service.name" for part in attributes.split(",")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``isoplug`` console script; returns the exit code."""
    arguments = _build_parser().parse_args(argv)
    if arguments.command == "demo" and arguments.protocol:
        try:
            return run_demo()
        except KeyboardInterrupt:
            return _EXIT_INTERRUPTED
    if arguments.command == "new":
        return _new(arguments.path)
    _configure_console_logging(arguments.log_level, sys.stdout)
    if arguments.command == "run":
        plugins_dir = arguments.plugins_dir
        config = SupervisorConfig(log_level=arguments.log_level)
        with _telemetry(arguments) as telemetry:
            if telemetry is None:
                return 2
            return _run_until_stopped(lambda stop: _run(plugins_dir, config, stop))
    if arguments.command == "demo":
        plugins_dir = arguments.plugins_dir or _example_plugins_dir()
        if plugins_dir is None:
            print(
                "isoplug demo: the example plugins were not found (neither in the installed "
                "package, isoplug/examples/plugins, nor in a source checkout, "
                "examples/plugins). Pass --plugins-dir DIR.",
                file=sys.stderr,
            )
            return 2
        duration = arguments.duration
        print(DEMO_HEADER, flush=True)
        return _run_until_stopped(lambda stop: _demo(plugins_dir, duration, stop))
    raise AssertionError(f"unhandled command {arguments.command!r}")


def _new(path: Path) -> int:
    from isoplug.scaffold import ScaffoldError, new_plugin

    try:
        written = new_plugin(path)
    except ScaffoldError as exc:
        print(f"isoplug new: {exc}", file=sys.stderr)
        return 2
    print(f"made the plugin {path.name!r} in {path}:")
    for file in written:
        print(f"  {file}")
    print(f"try it:\n  isoplug run {path}\n  python -m pytest {path}")
    return 0


def _example_plugins_dir() -> Path | None:
    """The example plugins: shipped in the installed package (``isoplug/examples/plugins``),
    else ``examples/plugins`` of the source checkout this package runs from (an editable
    install)."""
    package = Path(__file__).resolve().parent
    for candidate in (
        package / "examples" / "plugins",
        package.parents[1] / "examples" / "plugins",
    ):
        if candidate.is_dir():
            return candidate
    return None


def _run_until_stopped(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``body(stop)`` in a new event loop and return its exit code.

    The first Ctrl-C / SIGTERM sets ``stop`` (``body`` then stops its host cleanly); the
    second cancels ``body``, which kills every runner at once.
    """
    # uvloop when installed, as in the runners (see isoplug.runner.eventloop).
    result: int = eventloop.run(_with_signals(body))
    return result


async def _with_signals(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    requests = 0
    log = logging.getLogger("isoplug.cli")

    def on_signal(signum: signal.Signals) -> None:
        nonlocal requests
        requests += 1
        if requests == 1:
            log.warning("%s: stopping every plugin (again to kill them at once)", signum.name)
            stop.set()
        else:
            log.error("%s again: killing every runner now", signum.name)
            task.cancel(f"{signum.name} again")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await body(stop)
    except asyncio.CancelledError:
        return _EXIT_INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _run(plugins_dir: Path, config: SupervisorConfig, stop: asyncio.Event) -> int:
    log = logging.getLogger("isoplug.cli")
    try:
        with plugins_dir_for(plugins_dir) as directory:
            return await _run_host(directory, plugins_dir, config, stop)
    except (FileNotFoundError, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2


async def _run_host(
    directory: Path, plugins_dir: Path, config: SupervisorConfig, stop: asyncio.Event
) -> int:
    log = logging.getLogger("isoplug.cli")
    async with Host(directory, config=config) as host:
        for name, function in BUILTIN_CAPABILITIES.items():
            host.register_capability(name, function)
        count = len(host.plugins())
        log.info("running %d plugin(s) from %s; Ctrl-C to stop", count, plugins_dir)
        if count == 0:
            log.error("nothing to run in %s (no valid plugin.toml found)", plugins_dir)
            return 1
        await stop.wait()
    log.info("all plugins stopped")
    return 0


async def _demo(plugins_dir: Path, duration: float, stop: asyncio.Event) -> int:
    log = logging.getLogger("isoplug.demo")
    # Quicker health checks than the defaults, so that the hang is caught within the demo.
    config = SupervisorConfig(health_interval=1.0, health_timeout=1.0)
    log.info("demo: %s, each plugin in its own process, for %g s", plugins_dir, duration)
    started = time.perf_counter()
    async with Host(plugins_dir, config=config) as host:
        for name, function in BUILTIN_CAPABILITIES.items():
            host.register_capability(name, function)
        # The demo shows failed plugins among the others rather than stopping.
        infos = await host.wait_ready(30, raise_on_failure=False)
        ready = [i.id for i in infos if i.state.value == "ready"]
        log.info(
            "demo: %d plugin(s) ready in %.2f s: %s",
            len(ready),
            time.perf_counter() - started,
            ", ".join(ready),
        )
        for attempt in (
            ("chatty", "shout", {"text": "isolated"}),
            ("chatty", "dance", {}),
            ("chatty", "shout", {"txt": "typo"}),
            ("clock_reader", "host_time", {}),
        ):
            plugin_id, method, kwargs = attempt
            try:
                result = await host.call_with(plugin_id, method, kwargs=kwargs, timeout=5.0)
                log.info("demo: %s.%s(%s) returned %r", plugin_id, method, _args(kwargs), result)
            except IsoplugError as exc:
                log.info(
                    "demo: %s.%s(%s) raised %s: %s",
                    plugin_id,
                    method,
                    _args(kwargs),
                    type(exc).__name__,
                    getattr(exc, "remote_message", str(exc)),
                )
        deadline = started + duration
        tick = 0
        while not stop.is_set() and time.perf_counter() < deadline:
            tick += 1
            await host.publish("tick", {"n": tick})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, deadline - time.perf_counter()))
        with contextlib.suppress(IsoplugError):
            stats = await host.call_with("chatty", "stats", timeout=2.0)
            log.info("demo: chatty printed %(lines)d lines and got %(ticks)d ticks", stats)
        for info in host.plugins():
            last = info.last_exit.describe() if info.last_exit else "none"
            log.info(
                "demo: %-12s %-10s restarts=%d  last exit: %s",
                info.id,
                info.state.value,
                info.restarts,
                last,
            )
        log.info("demo: stopping every plugin")
    print(
        "\nWhat you saw: each plugin ran in its own process; its print() lines, stderr and "
        "logging records reached this host, attributed to it; calls returned values or raised "
        "typed errors; a crash was restarted and a hang detected.\n"
        "Next: isoplug new my_plugin (a plugin and its test), isoplug run DIR, and the guides "
        "in docs/ (writing a plugin, running plugins from asyncio, host-side logging).",
        flush=True,
    )
    return 0


def _args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


if __name__ == "__main__":
    sys.exit(main())
