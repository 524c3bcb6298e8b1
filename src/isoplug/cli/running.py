"""``isoplug run``: a host in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from isoplug.cli.telemetry import telemetry
from isoplug.host import Host, SupervisorConfig
from isoplug.host.registry import plugins_dir_for
from isoplug.host.reload import reload_unavailable
from isoplug.runner import eventloop

#: Capabilities the CLI's host offers to plugins that are granted them.
BUILTIN_CAPABILITIES: dict[str, Callable[..., Any]] = {"clock.now": time.time}


#: Exit code after Ctrl-C interrupted something that was not a clean stop.
EXIT_INTERRUPTED = 130


def run_until_stopped(
    body: Callable[[asyncio.Event], Awaitable[int]], loop: str | None = None
) -> int:
    """Run ``body(stop)`` in a new event loop and return its exit code; ``loop`` names the
    loop (``"asyncio"``, ``"uvloop"``; default: as :mod:`isoplug.runner.eventloop` picks,
    uvloop when installed, as in the runners).

    The first Ctrl-C / SIGTERM sets ``stop`` (``body`` then stops its host cleanly); the
    second cancels ``body``, which kills every runner at once.
    """
    result: int = eventloop.run(_with_signals(body), loop)
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
        return EXIT_INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def plugin_config_file(path: Path | None) -> dict[str, dict[str, Any]] | None:
    """The overrides in ``path`` (``{}`` without one); None when it is unusable (said)."""
    if path is None:
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        print(f"isoplug run: --config {path}: {exc}", file=sys.stderr)
        return None
    loose = sorted(key for key, value in document.items() if not isinstance(value, dict))
    if loose:
        print(
            f"isoplug run: --config {path}: {', '.join(loose)}: expected one table per plugin "
            "id ([greeter] then its settings)",
            file=sys.stderr,
        )
        return None
    return document


def tui_available() -> bool:
    try:
        import textual  # noqa: F401
    except ImportError:
        print(
            "isoplug run: --tui needs Textual: pip install 'isoplug[tui]'",
            file=sys.stderr,
        )
        return False
    return True


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What ``isoplug run``'s options ask of the host beyond its supervisor config."""

    tui: bool = False
    reload: bool = False
    plugin_config: Mapping[str, Mapping[str, Any]] | None = None


def run_command(arguments: argparse.Namespace) -> int:
    """``isoplug run``: check the options, then run the host until it is stopped."""
    if arguments.tui and not tui_available():
        return 2
    if arguments.reload and (why := reload_unavailable()) is not None:
        print(f"isoplug run: --reload: {why}", file=sys.stderr)
        return 2
    plugin_config = plugin_config_file(arguments.config)
    if plugin_config is None:
        return 2
    options = RunOptions(arguments.tui, arguments.reload, plugin_config)
    config = SupervisorConfig(log_level=arguments.log_level)
    plugins_dir = arguments.plugins_dir
    with telemetry(arguments) as export:
        if export is None:
            return 2
        # Textual installs asyncio's eager task factory, which uvloop's create_task refuses
        # (Python 3.12 and later): the view runs the host on the standard loop. The runners
        # keep theirs.
        loop = "asyncio" if options.tui else None
        return run_until_stopped(lambda stop: run_plugins(plugins_dir, config, stop, options), loop)


async def run_plugins(
    plugins_dir: Path, config: SupervisorConfig, stop: asyncio.Event, options: RunOptions
) -> int:
    log = logging.getLogger("isoplug.cli")
    try:
        with plugins_dir_for(plugins_dir) as directory:
            return await run_host(directory, plugins_dir, config, stop, options)
    except (FileNotFoundError, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2


async def run_host(
    directory: Path,
    plugins_dir: Path,
    config: SupervisorConfig,
    stop: asyncio.Event,
    options: RunOptions,
) -> int:
    log = logging.getLogger("isoplug.cli")
    async with Host(
        directory, config=config, reload=options.reload, plugin_config=options.plugin_config
    ) as host:
        for name, function in BUILTIN_CAPABILITIES.items():
            host.register_capability(name, function)
        count = len(host.plugins())
        log.info("running %d plugin(s) from %s; Ctrl-C to stop", count, plugins_dir)
        if count == 0 and not options.reload:
            log.error("nothing to run in %s (no valid plugin.toml found)", plugins_dir)
            return 1
        if options.tui:
            from isoplug.tui import run_dashboard

            await run_dashboard(host, title=str(plugins_dir), stop=stop)
        else:
            await stop.wait()
    log.info("all plugins stopped")
    return 0
