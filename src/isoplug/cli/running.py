"""``isoplug run``: a host in the foreground until Ctrl-C, SIGTERM or SIGHUP, or until every
plugin has failed for good.

Its exit code says how the run went (:mod:`isoplug.cli.signals` has the codes): 0 when it was
stopped on request and every plugin ran; 1 when a plugin was skipped or failed during the
run (with ``--reload``: skipped or failed at the end), when every plugin failed for good, when
no plugin was ever ready though they tried, or there was nothing to run; 2 for unusable
options; 71 when the system refused the command itself something it needs (out of descriptors);
74 when stdout could not be written; 130 after a second stop signal; 141 when the reader of
stdout went away. The errors that end the command go to stderr; the console (every record,
the host's and the plugins') stays on stdout.

Every plugin failed for good (each is ``FAILED``: it cannot be loaded, or its restarts are
used up, and its runner has no process left): without ``--reload`` (a saved fix restarts it)
and ``--tui`` (``r`` restarts it) nothing can change that, so the command says why each one
failed and ends, as ``docker compose up`` does when every container has exited. A plugin
waiting out a crash's backoff (``RESTARTING``) has not failed yet; while one plugin runs, the
command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from isoplug.cli.console import ConsoleHandler
from isoplug.cli.say import say_error, shown, shown_argument
from isoplug.cli.signals import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PLUGIN_FAILED,
    EXIT_USAGE,
    StopSignals,
    run_until_stopped,
)
from isoplug.cli.telemetry import telemetry
from isoplug.host import Host, PluginInfo, PluginState, StateChange, SupervisorConfig
from isoplug.host.access_denied import READ_FILE, denied, is_denied
from isoplug.host.manifest_file import read_at_most
from isoplug.host.registry import deeper_manifest, discover, is_plugin_dir, plugins_dir_for
from isoplug.host.reload import reload_unavailable
from isoplug.host.toml_text import MAX_NESTING, TomlTextError, nested_past_limit, parse_toml
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop
from isoplug.sizes import format_size
from isoplug.wire.sanitize import clean_text

#: Capabilities the CLI's host offers to plugins that are granted them.
BUILTIN_CAPABILITIES: dict[str, Callable[..., Any]] = {"clock.now": time.time}

#: Seconds ``--tui`` waits, at most, for the console's lines logged before its view.
_BEFORE_VIEW_WAIT = 1.0
#: The most of a ``--config`` file read: settings for many plugins fit in a few KiB, and a
#: path naming an endless file (``/dev/zero``, a FIFO fed without end) must not fill memory.
MAX_CONFIG_BYTES = 1024 * 1024

#: Cap for one plugin's reason in the message that ends a run whose plugins all failed (its
#: whole error, traceback included, was logged when it failed).
MAX_REASON_CHARS = 2000


def fatal(message: str) -> None:
    """An error that ends ``isoplug run``: on stderr, whatever the console is (sanitized:
    it quotes the operator's paths and keys)."""
    say_error("run", message)


def plugin_config_file(path: Path | None) -> dict[str, dict[str, Any]] | None:
    """The overrides in ``path`` (``{}`` without one); None when it is unusable (said)."""
    if path is None:
        return {}
    try:
        raw = read_at_most(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        fatal(f"--config {shown(path)}: {denied(path, READ_FILE) if is_denied(exc) else exc}")
        return None
    if raw is None:
        fatal(
            f"--config {shown(path)}: holds more than {format_size(MAX_CONFIG_BYTES)} "
            f"({MAX_CONFIG_BYTES} bytes), the limit for a configuration file; not read further "
            "(is it the file meant? /dev/zero and a FIFO fed without end never end)"
        )
        return None
    try:
        document = parse_toml(raw)
    except TomlTextError as exc:
        fatal(f"--config {shown(path)}: {exc}")
        return None
    deep = nested_past_limit(document)
    if deep is not None:
        # As a manifest's [config] is refused: what the runner is sent is walked recursively.
        fatal(
            f"--config {shown(path)}: {shown(deep)}: nests tables and arrays more than "
            f"{MAX_NESTING} levels deep"
        )
        return None
    loose = sorted(key for key, value in document.items() if not isinstance(value, dict))
    if loose:
        fatal(
            f"--config {shown(path)}: {shown(', '.join(loose))}: expected one table per plugin id "
            "([greeter] then its settings)"
        )
        return None
    return document


def tui_available() -> bool:
    try:
        import textual  # noqa: F401
    except ImportError:
        fatal("--tui needs Textual: pip install 'isoplug[tui]'")
        return False
    if not sys.stdout.isatty():
        fatal("--tui needs a terminal on stdout; without --tui the output suits a file or pipe")
        return False
    undrawable = _undrawable_stream()
    if undrawable is not None:
        name, encoding = undrawable
        # PYTHONIOENCODING wins over the locale: LC_ALL would change nothing then.
        fix = (
            "unset PYTHONIOENCODING (or set it to utf-8)"
            if os.environ.get("PYTHONIOENCODING", "").partition(":")[0]
            else "run it in a UTF-8 locale (LC_ALL=C.UTF-8, or PYTHONUTF8=1)"
        )
        fatal(
            "--tui needs a terminal encoding that can draw its dashboard "
            f"({name}'s is {encoding!r}): {fix}, or run without --tui"
        )
        return False
    return True


#: Characters the dashboard draws (Textual's rules, scrollbars and header icon). Textual has
#: no ASCII fallback (it renders with ``safe_box=False`` whatever the terminal), and each
#: character the stream's encoding lacks would reach the screen as a ``\u2500`` escape
#: (:func:`isoplug.cli._standard_streams`): a screen of garbage rather than an error.
_DASHBOARD_CHARACTERS = "─│━┃▁▔▎▏▊▌█—⭘"


def _undrawable_stream() -> tuple[str, str] | None:
    """The standard stream (and its encoding) that cannot carry the dashboard: stdout, the
    terminal ``--tui`` asks for, or stderr, which Textual draws on; None when both can."""
    for name, stream in (("stdout", sys.stdout), ("stderr", sys.__stderr__)):
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            _DASHBOARD_CHARACTERS.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            return name, encoding
    return None


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What ``isoplug run``'s options ask of the host beyond its supervisor config."""

    tui: bool = False
    reload: bool = False
    plugin_config: Mapping[str, Mapping[str, Any]] | None = None
    config_file: Path | None = None


def run_command(
    arguments: argparse.Namespace,
    console: ConsoleHandler | None = None,
    signals: StopSignals | None = None,
) -> int:
    """``isoplug run``: check the options, then run the host until it is stopped.
    ``signals`` keeps the stop signals it got, for the waits after it (the console's last
    lines: :func:`~isoplug.cli.console.finish_console`)."""
    if arguments.tui and not tui_available():
        return EXIT_USAGE
    if arguments.reload and (why := reload_unavailable()) is not None:
        fatal(f"--reload: {why}")
        return EXIT_USAGE
    plugin_config = plugin_config_file(arguments.config)
    if plugin_config is None:
        return EXIT_USAGE
    options = RunOptions(arguments.tui, arguments.reload, plugin_config, arguments.config)
    # --log-level is what the console shows; the plugins log at their manifests' levels
    # unless --plugin-log-level says otherwise.
    config = SupervisorConfig(log_level=arguments.plugin_log_level)
    plugins_dir = arguments.plugins_dir
    signals = signals or StopSignals()
    with telemetry(arguments, signals) as export:
        if export is None:
            return EXIT_USAGE
        # Textual installs asyncio's eager task factory, which uvloop's create_task refuses
        # (Python 3.12 and later): the view runs the host on the standard loop. The runners
        # keep theirs.
        loop = "asyncio" if options.tui else None
        code = run_until_stopped(
            lambda stop: run_plugins(plugins_dir, config, stop, options, console), loop, signals
        )
    # A second signal killed every runner, or a stop signal ended the export's last wait.
    return EXIT_INTERRUPTED if signals.cut_short or signals.killed else code


async def run_plugins(
    plugins_dir: Path,
    config: SupervisorConfig,
    stop: asyncio.Event,
    options: RunOptions,
    console: ConsoleHandler | None = None,
) -> int:
    if console is not None:
        loop = asyncio.get_running_loop()
        # The reader of stdout is gone (`| head` ended): stop the plugins as on Ctrl-C.
        console.on_gone = lambda: loop.call_soon_threadsafe(stop.set)
        if console.gone.is_set():
            stop.set()  # gone before it could be told (a record written before this)
        console.watch_reader()
    try:
        with plugins_dir_for(plugins_dir) as directory:
            code = await run_host(directory, plugins_dir, config, stop, options, console=console)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # The plugins folder itself is unusable (missing, a file, unreadable): said so.
        fatal(str(exc))
        return EXIT_USAGE
    finally:
        if console is not None:
            console.stop_watching()
            console.on_gone = None  # the loop it would wake ends with this call
    # A console that failed on the way sets the exit code once its last lines were written
    # (finish_console).
    return code


class Outcome:
    """Which plugins failed during the run (``on_change``), for the exit code."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]], config_file: Path | None):
        self.failed: set[str] = set()
        #: The plugins that were ready at some point of the run.
        self.ready: set[str] = set()
        #: The plugins whose runner ended, or could not start, before they were ever ready.
        self.start_failed: set[str] = set()
        #: Set on every state change: a waiter on the plugins' states clears it, then looks.
        self.changed = asyncio.Event()
        self._overrides = overrides
        self._config_file = config_file

    def on_change(self, change: StateChange) -> None:
        self.changed.set()
        if change.state is PluginState.READY:
            self.ready.update(change.plugin_ids)
        elif change.state in (PluginState.RESTARTING, PluginState.FAILED):
            self.start_failed.update(set(change.plugin_ids) - self.ready)
        if change.state is not PluginState.FAILED:
            return
        self.failed.update(change.plugin_ids)
        # A plugin that cannot take its configuration says which field is wrong, not that
        # the value came from --config: say it here, where the file is known.
        for plugin_id in change.plugin_ids:
            fields = self._overrides.get(plugin_id)
            if fields and change.config_refused:
                guarded_logger("isoplug.cli").error(
                    "plugin %s: its [config] was merged with [%s] of --config %s (%s): "
                    "a config error may come from there",
                    plugin_id,
                    plugin_id,
                    shown(self._config_file),
                    shown(", ".join(sorted(fields))),
                )


def failed_for_good(info: PluginInfo) -> bool:
    """Whether ``info``'s plugin is failed and stays so unless someone restarts it: nothing in
    the host starts a FAILED runner again (only ``host.restart()``, a reload, a new config).
    Its runner has no process left too, so that a group whose plugins all failed to import
    is counted once the runner has exited and said why, not while it is on its way out."""
    return info.state is PluginState.FAILED and info.pid is None


def failure_reason(info: PluginInfo) -> str:
    """Why ``info``'s plugin failed, on one line: what ended it (its error's first line) and
    the error its runner said last before that (a ``setup`` that raised, say), if any."""
    lines = (info.error or "failed (no reason was given)").splitlines()
    # Runner text in the error was sanitized when the supervisor took it (continuation lines
    # indented): a line starting "last error: " at column 0 is the supervisor's own.
    said = [lines[0], *(line for line in lines[1:] if line.startswith("last error: "))]
    return clean_text("; ".join(said), MAX_REASON_CHARS)


def start_failure(info: PluginInfo) -> str:
    """Why ``info``'s plugin did not start: its error, else how its last runner ended."""
    if info.error is None and info.last_exit is not None:
        return clean_text(info.last_exit.describe(), MAX_REASON_CHARS)
    return failure_reason(info)


async def until_stopped(
    host: Host, stop: asyncio.Event, outcome: Outcome
) -> list[PluginInfo] | None:
    """Wait for ``stop``; or, sooner, until every plugin has failed for good (returned then):
    without --reload or --tui nothing would ever change that. None when ``stop`` came."""
    while not stop.is_set():
        outcome.changed.clear()
        infos = host.plugins()
        if infos and all(failed_for_good(info) for info in infos):
            return infos
        waiters = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(outcome.changed.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    return None


def unknown_overrides(
    directory: Path, overrides: Mapping[str, Mapping[str, Any]], config_file: Path | None
) -> dict[str, Mapping[str, Any]]:
    """``overrides`` without the tables naming no plugin of ``directory``, which are said."""
    if not overrides:
        return dict(overrides)
    ids = {manifest.id for manifest in discover(directory).manifests}
    unknown = sorted(set(overrides) - ids)
    if unknown:
        guarded_logger("isoplug.cli").warning(
            "--config %s: no plugin has the id of table(s) %s: ignored (plugin ids here: %s)",
            shown(config_file),
            shown(", ".join(f"[{name}]" for name in unknown)),
            ", ".join(sorted(ids)) or "none",
        )
    return {name: values for name, values in overrides.items() if name in ids}


async def run_host(
    directory: Path,
    plugins_dir: Path,
    config: SupervisorConfig,
    stop: asyncio.Event,
    options: RunOptions,
    *,
    console: ConsoleHandler | None = None,
) -> int:
    log = guarded_logger("isoplug.cli")
    overrides = options.plugin_config or {}
    if not options.reload:
        # With --reload a table may name a plugin folder made later: the host keeps them all.
        overrides = unknown_overrides(directory, overrides, options.config_file)
    outcome = Outcome(overrides, options.config_file)
    host = Host(
        directory,
        config=config,
        reload=options.reload,
        plugin_config=overrides,
        on_change=outcome.on_change,
    )
    if options.config_file is not None:
        host.plugin_config_origin = f"--config {shown(options.config_file)}"
        if options.reload:
            # Hot reload follows the plugins folder only: an edit of the file would otherwise
            # be taken for applied.
            log.info(
                "--config %s is read once, at start: --reload does not watch it "
                "(stop and run again to apply an edit of it)",
                shown(options.config_file),
            )
    async with host:
        for name, function in BUILTIN_CAPABILITIES.items():
            host.register_capability(name, function)
        count = len(host.plugins())
        if count == 0 and not options.reload:
            why = _why_nothing(plugins_dir, host.problems)
            fatal(f"nothing to run in {shown(plugins_dir)} ({why})")
            return EXIT_PLUGIN_FAILED
        log.info("running %d plugin(s) from %s; Ctrl-C to stop", count, shown(plugins_dir))
        if options.tui:
            from isoplug.tui import run_dashboard

            if console is not None:
                # The console's lines so far go out before the view takes the terminal over.
                await off_loop(console.writer.written, _BEFORE_VIEW_WAIT)
            await run_dashboard(host, title=shown(plugins_dir), stop=stop)
        elif options.reload:
            # A fix saved restarts a failed plugin: the session goes on until stopped.
            await stop.wait()
        elif (failed_all := await until_stopped(host, stop, outcome)) is not None:
            if console is not None:
                # Each failure's console line goes out before the message summing them up:
                # stderr is often the console's own file (`> log 2>&1`, a container's tty).
                await off_loop(console.writer.caught_up)
            fatal(
                f"every plugin failed for good ({len(failed_all)}), and nothing restarts a "
                "failed plugin without --reload or --tui: stopping\n"
                + "\n".join(f"  {info.id}: {failure_reason(info)}" for info in failed_all)
            )
        # Plugins kept running as they were (hot reload refused their plugin.toml's last
        # change) are not running as configured either, but they were not skipped.
        kept = sorted(host.kept)
        skipped = len(host.problems) - len(kept)
        failed = outcome.failed
        if options.reload:
            # A session of edits: what counts is how it ends, not a half-saved file fixed
            # since (host.problems follows the folder; a fixed plugin is no longer FAILED).
            failed = {p.id for p in host.plugins() if p.state is PluginState.FAILED}
        never = never_started(host.plugins(), outcome, failed)
    log.info("all plugins stopped")
    if skipped or failed or kept or never:
        when = " at the end" if options.reload else ""
        log.error(
            "exit code %d: %s",
            EXIT_PLUGIN_FAILED,
            "; ".join(
                part
                for part in (
                    f"{skipped} plugin(s) skipped{when}" if skipped else "",
                    f"failed{when}: {', '.join(sorted(failed))}" if failed else "",
                    f"running as they were, their plugin.toml refused, at the end: "
                    f"{', '.join(kept)}"
                    if kept
                    else "",
                    f"{'no plugin ever started' if not outcome.ready else 'never started'} "
                    f"({len(never)}): "
                    + "; ".join(f"{info.id}: {start_failure(info)}" for info in never)
                    if never
                    else "",
                )
                if part
            ),
        )
        return EXIT_PLUGIN_FAILED
    return EXIT_OK


def never_started(infos: list[PluginInfo], outcome: Outcome, failed: set[str]) -> list[PluginInfo]:
    """The plugins that were never ready though they tried (their runner ended or could not
    start: a setup that fails every time, the host out of descriptors or threads for its
    runners), not failed for good (said so already), whether or not others ran: a plugin
    that never served is no clean run. None that had not tried yet (a stop right after the
    start)."""
    return [
        i
        for i in infos
        if i.id in outcome.start_failed and i.id not in outcome.ready and i.id not in failed
    ]


def _why_nothing(plugins_dir: Path, problems: list[str]) -> str:
    """Why a plugins folder gave no plugin, with a hint where the user likely meant another
    folder: one whose plugin folders are a level deeper."""
    if problems:
        # Invalid manifests, folders the host may not read: each said in an ERROR above.
        return f"every plugin folder was skipped ({len(problems)}): the errors above say why"
    if any(plugins_dir.glob("*/plugin.toml")) or is_plugin_dir(plugins_dir):
        return "no valid plugin.toml found"
    deeper = deeper_manifest(plugins_dir)
    if deeper is None:
        return "no plugin.toml found: a plugins folder holds one folder per plugin"
    meant = shown_argument(deeper.parent.parent)
    return (
        f"no plugin.toml found in its folders; {shown(deeper)} is one level deeper: "
        f"isoplug run {meant}?"
    )
