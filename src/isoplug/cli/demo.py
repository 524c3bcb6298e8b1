"""``isoplug demo``: the example plugins shipped with isoplug, for about ten seconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from isoplug.cli.console import ConsoleHandler
from isoplug.cli.running import BUILTIN_CAPABILITIES, start_failure
from isoplug.cli.say import say_error, shown
from isoplug.cli.signals import (
    EXIT_BROKEN_PIPE,
    EXIT_OK,
    EXIT_PLUGIN_FAILED,
    EXIT_USAGE,
)
from isoplug.errors import IsoplugError
from isoplug.host import Host, PluginInfo, PluginState, StateChange, SupervisorConfig
from isoplug.host.registry import plugins_dir_for
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop

#: How long ``isoplug demo`` lets the example plugins run: long enough to see a crash,
#: a restart and a hang being detected, short enough to watch.
DEMO_DURATION = 10.0

#: How long ``isoplug demo`` waits for its plugins to be ready before it gives up (exit code
#: 1): the examples are ready in well under a second; a ``--plugins-dir`` plugin whose
#: ``setup()`` takes longer is not a demo.
DEMO_READY_WITHIN = 30.0


#: What ``isoplug demo`` prints over its columns.
DEMO_HEADER = (
    "columns: time, source (a plugin's id, or isoplug: the host), the record's level "
    "(stdout/stderr: a line the plugin printed, stdout:error one at another level), message"
)


def example_plugins_dir() -> Path | None:
    """The example plugins: shipped in the installed package (``isoplug/examples/plugins``),
    else ``examples/plugins`` of the source checkout this package runs from (an editable
    install)."""
    package = Path(__file__).resolve().parents[1]  # isoplug/, from isoplug/cli/demo.py
    for candidate in (
        package / "examples" / "plugins",
        package.parents[1] / "examples" / "plugins",
    ):
        if candidate.is_dir():
            return candidate
    return None


class Seen:
    """What happened during the demo, so that its summary claims nothing else."""

    def __init__(self) -> None:
        self.host: Host | None = None
        self.crashed: set[str] = set()
        self.killed_by_host: set[str] = set()
        self.answered = False
        self.raised: set[str] = set()

    def on_change(self, change: StateChange) -> None:
        if change.state is not PluginState.RESTARTING or self.host is None:
            return
        for plugin_id in change.plugin_ids:
            account = self.host.plugin(plugin_id).last_exit
            if account is not None and account.sent_by_host:
                self.killed_by_host.add(plugin_id)  # found hung (or over a limit)
            else:
                self.crashed.add(plugin_id)

    def summary(self) -> str:
        saw = [
            "each plugin ran in its own process; its print() lines, stderr and logging "
            "records reached this host, attributed to it"
        ]
        if self.answered:
            saw.append("calls returned values")
        if self.raised:
            saw.append(f"calls raised typed errors ({', '.join(sorted(self.raised))})")
        if self.crashed:
            saw.append(f"a crash was restarted ({', '.join(sorted(self.crashed))})")
        if self.killed_by_host:
            hung = ", ".join(sorted(self.killed_by_host))
            saw.append(f"a hang was detected, killed and restarted ({hung})")
        return "What you saw: " + "; ".join(saw) + "."


async def run_demo_plugins(
    plugins_dir: Path,
    duration: float,
    stop: asyncio.Event,
    console: ConsoleHandler | None = None,
    *,
    ready_within: float = DEMO_READY_WITHIN,
) -> int:
    log = guarded_logger("isoplug.demo")
    if console is not None:
        loop = asyncio.get_running_loop()
        console.on_gone = lambda: loop.call_soon_threadsafe(stop.set)
        if console.gone.is_set():
            stop.set()  # gone before it could be told (a record written before this)
        console.watch_reader()
    log.info("demo: %s, each plugin in its own process, for %g s", shown(plugins_dir), duration)
    seen = Seen()
    try:
        # One plugin's folder is taken as run takes it.
        with plugins_dir_for(plugins_dir) as directory:
            code = await _demo(
                directory,
                duration,
                stop,
                seen,
                console,
                ready_within=ready_within,
                named=plugins_dir,
            )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # --plugins-dir unusable (unreadable, or gone since it was checked): said so.
        say_error("demo", str(exc))
        return EXIT_USAGE
    finally:
        if console is not None:
            console.stop_watching()
            console.on_gone = None  # the loop it would wake ends with this call
    # A console that failed on the way sets the exit code once its last lines were written
    # (finish_console).
    return code


async def _demo(
    plugins_dir: Path,
    duration: float,
    stop: asyncio.Event,
    seen: Seen,
    console: ConsoleHandler | None,
    *,
    ready_within: float,
    named: Path,
) -> int:
    """The demo in ``plugins_dir`` (``named`` on the command line: one plugin's folder is
    linked into a scratch plugins folder)."""
    log = guarded_logger("isoplug.demo")
    # Quicker health checks than the defaults, so that the hang is caught within the demo.
    config = SupervisorConfig(health_interval=1.0, health_timeout=1.0)
    started = time.perf_counter()
    async with Host(plugins_dir, config=config, on_change=seen.on_change) as host:
        seen.host = host
        for name, function in BUILTIN_CAPABILITIES.items():
            host.register_capability(name, function)
        if not host.plugins():
            await _say_error_after(
                console, f"nothing to run in {shown(named)} (no valid plugin.toml found)"
            )
            return EXIT_PLUGIN_FAILED
        # The demo shows failed plugins among the others rather than stopping.
        try:
            infos = await host.wait_ready(ready_within, raise_on_failure=False)
        except TimeoutError as exc:
            await _say_error_after(
                console, not_ready(str(exc), host.plugins(), ready_within, config.ready_timeout)
            )
            return EXIT_PLUGIN_FAILED
        ready = [i.id for i in infos if i.state.value == "ready"]
        if not ready:
            # Nothing ran: no summary of what the plugins showed, which they did not.
            await _say_error_after(
                console,
                f"no plugin was ready ({len(infos)}): "
                + "; ".join(f"{info.id}: {start_failure(info)}" for info in infos),
            )
            return EXIT_PLUGIN_FAILED
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
                seen.answered = True
                log.info("demo: %s.%s(%s) returned %r", plugin_id, method, _args(kwargs), result)
            except IsoplugError as exc:
                seen.raised.add(type(exc).__name__)
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
    if console is not None and console.gone.is_set():
        return EXIT_BROKEN_PIPE
    # Installed from a wheel, isoplug has no docs/ folder to point at: its help it has.
    summary = (
        f"\n{seen.summary()}\n"
        "Next: isoplug new my_plugin (a plugin and its test), isoplug run DIR; isoplug --help "
        "for every command and option."
    )
    if console is not None:
        console.say(summary)  # after the lines before it, from the console's writer
    else:
        print(summary, flush=True)
    return EXIT_OK


async def _say_error_after(console: ConsoleHandler | None, message: str) -> None:
    """Say ``message``, which ends the demo, on stderr once the console has written the lines
    it sums up (each plugin's failure): stderr is often the console's own file (``> log
    2>&1``, a container's terminal), as ``isoplug run`` does for its plugins all failed."""
    if console is not None:
        await off_loop(console.writer.caught_up)
    say_error("demo", message)


def not_ready(
    waited: str, infos: list[PluginInfo], ready_within: float, ready_timeout: float
) -> str:
    """Why the demo ends before it began: ``waited``, the host's account of the plugins it
    waited for (their states, where each ``setup()`` waits), then, for each of them that
    started before, what the host knows of that start's end (its error, the runner's last
    stderr lines)."""
    lines = [waited]
    for info in infos:
        if info.state in (PluginState.READY, PluginState.FAILED, PluginState.STOPPED):
            continue
        if info.error is not None or info.last_exit is not None:
            lines.append(f"  {info.id}, its last start: {start_failure(info)}")
    lines.append(
        f"The demo ends here: it waits {ready_within:g} s for its plugins to be ready, and a "
        f"runner whose setup() has not returned within {ready_timeout:g} s (ready_timeout) is "
        "killed and started again; isoplug run DIR does the same, and fails a plugin after "
        "more than its [restart] max_restarts starts in a row that never became ready."
    )
    return "\n".join(lines)


def _args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
