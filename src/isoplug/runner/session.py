"""One runner's life: connect back to the host, load plugins, serve, shut down in time.

Order of events (the host's supervisor relies on it):

1. connect to ``bootstrap.control_address`` with the token, as ``bootstrap.runner_id``;
2. import every plugin (failures are kept, with their traceback);
3. run ``setup`` of each imported plugin (a failure is kept and stops further setups);
4. send :data:`~isoplug.control.READY` with the report; if a setup failed, or nothing could be
   loaded (its import raised, its entry is missing, its configuration is refused), end as at a
   stop (step 5, from the teardown on: what the plugins' imports started, tasks and threads,
   is ended, waited for and named the same way, and log forwarding ends after it) and exit
   with :data:`~isoplug.control.EXIT_SETUP_FAILED` /
   :data:`~isoplug.control.EXIT_NOTHING_LOADED`;
5. serve calls and events until :data:`~isoplug.control.SHUTDOWN` arrives or the host goes
   away; then answer the calls still queued (they never start), and within
   ``bootstrap.teardown_timeout`` together, cancel the calls still being served and the
   event handlers running, run the ``teardown`` hooks, and cancel and wait for the tasks the
   plugins left running (:mod:`isoplug.runner.leftover_tasks`), and wait for the threads that
   would hold the process's exit (:mod:`isoplug.runner.leftover_threads`), and run the
   plugins' ``atexit`` hooks (:mod:`isoplug.runner.exit_hooks`); end log forwarding (after
   all of it: what a method or a task logs as it is cancelled, or a hook logs, and the
   warnings naming what would not end, are forwarded as records), say goodbye, and return 0
   (all of it: :mod:`isoplug.runner.teardown`); the process exits at once instead when a
   task, such a thread or an ``atexit`` hook would not end, or a ``teardown`` blocks the
   event loop past the deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path
from typing import Any

import msgspec

from isoplug.control import (
    CALL,
    CAPABILITY,
    CONTROL_ROLE,
    EVENT,
    EVENT_COUNTS,
    EXIT_CANNOT_CONNECT,
    EXIT_NOTHING_LOADED,
    EXIT_SETUP_FAILED,
    PING,
    READY,
    SET_CONFIG,
    SET_LOG_LEVEL,
    SETUP_WHERE,
    SHUTDOWN,
    Bootstrap,
    CallOutcome,
    CallRequest,
    CapabilityDenied,
    CapabilityRequest,
    ConfigChange,
    EventCounts,
    LoadFailure,
    LoadStage,
    LogLevelChange,
    ReadyReport,
)
from isoplug.errors import CapabilityFailed, ConfigInvalid, IsoplugError, RemoteError
from isoplug.log_guard import guarded_logger
from isoplug.logs.hooks import asyncio_exception_handler, track_task_sources
from isoplug.logs.sources import add_code_home, attributed_to
from isoplug.rpc import Peer
from isoplug.rpc.admission import AdmissionLimits
from isoplug.rpc.remote_errors import EXIT_REQUESTS, exit_request_text, traceback_text
from isoplug.runner import forked_away, outside_stop
from isoplug.runner.api import PluginContext
from isoplug.runner.config import accepts_live_config, validate_config
from isoplug.runner.dispatch import LoadedPlugin, PluginTable, plugin_source
from isoplug.runner.exit_hooks import mark_plugin_hooks
from isoplug.runner.group_logging import guard_group_logging, member_code
from isoplug.runner.health import start_health
from isoplug.runner.inherited import inherited_processes
from isoplug.runner.kept_forwarding import (
    keep_loguru_forwarded,
    render_consoles,
    watch_forwarding,
)
from isoplug.runner.leftover_tasks import exit_leaving
from isoplug.runner.limits import apply_limits, note_memory_error
from isoplug.runner.loader import PluginLoadError, load_plugin_class
from isoplug.runner.logging_setup import PluginLevels
from isoplug.runner.priority import lower_priority
from isoplug.runner.setup_where import SetupWatch
from isoplug.runner.teardown import tear_down
from isoplug.runner.thread_sources import attribute_threads
from isoplug.runner.vital_fds import CONTROL, HEALTH, guard_closes, vital

__all__ = ["run_runner"]

_log = guarded_logger("isoplug.runner")

#: Host capability calls get the same patience as host -> plugin calls by default.
CAPABILITY_TIMEOUT = 30.0
#: How long the host may take to take the final count of events: its loop answers at once,
#: unless it is busy; the runner's exit must not wait on it for long.
_LAST_WORD_TIMEOUT = 2.0
_DENIED = f"{CapabilityDenied.__module__}.{CapabilityDenied.__qualname__}"
_FAILED = f"{CapabilityFailed.__module__}.{CapabilityFailed.__qualname__}"


async def run_runner(bootstrap: Bootstrap) -> int:
    """Run the runner described by ``bootstrap``; return the process exit code."""
    # First: what is new since the loop was made is the loop's (nothing else opened since).
    vital.note_loop_running()
    running = _run(bootstrap)
    # That coroutine holds the only reference left: it drops the tokens once connected.
    del bootstrap
    try:
        code = await running
    except Exception:
        # A bug of isoplug's: its traceback says why the runner ends, and the loop's later
        # runs (uvloop makes its signals' socket pair anew in each) must not be taken for
        # descriptors the plugin closed.
        vital.disarm()
        raise
    vital.disarm()
    return code


async def _run(bootstrap: Bootstrap) -> int:
    # Before any plugin code: what exists now was started by its interpreter command.
    inherited = inherited_processes()
    lower_priority(bootstrap.nice)  # before any plugin code runs
    loop = asyncio.get_running_loop()
    # "Task exception was never retrieved" and the like: a record with the exception, on the
    # logger of the plugin whose task it was.
    loop.set_exception_handler(asyncio_exception_handler)
    track_task_sources(loop)
    # Before any plugin is imported: what it logs at import time obeys its level, and in a
    # group no member's logging configuration silences another's records.
    guard_group_logging(bootstrap.plugins)
    levels = PluginLevels(bootstrap.plugins)
    levels.apply()
    watch_forwarding(loop)
    # Before connecting: the host's health checks start with the ready report.
    workers, health = start_health(bootstrap)
    table = PluginTable(workers=workers)
    if health is not None:
        health.event_drops = table.events.drop_counts
        health.event_handles = table.events.handle_counts
    shutdown = asyncio.Event()
    peer_box: list[Peer] = []

    async def call_noting_memory_errors(request: CallRequest) -> CallOutcome:
        outcome = await table.call(request)
        if outcome.error is not None:
            note_memory_error(request, outcome)
        return outcome

    def shutdown_requested(_: Any) -> None:
        outside_stop.host_stops()  # if its stdin did not say so first
        shutdown.set()

    contexts: dict[str, PluginContext] = {}

    async def set_config(change: ConfigChange) -> bool:
        """Validate a plugin's new configuration; hand it to its ``on_config`` (True), or say
        that the plugin must restart to take it (False). Raises ConfigInvalid."""
        plugin = table.plugins.get(change.plugin)
        if plugin is None:
            raise ValueError(f"plugin {change.plugin!r} is not loaded in this runner")
        config = validate_config(change.plugin, type(plugin.instance), change.config)
        if not accepts_live_config(plugin.instance):
            return False
        with attributed_to(plugin.source):
            try:
                await _hook(plugin.instance.on_config(config))  # type: ignore[attr-defined]
            except EXIT_REQUESTS as exc:
                # As from a method: it fails this change (the host then restarts the plugin
                # with it), never the runner and the other plugins it serves.
                raise RuntimeError(
                    f"on_config raised {exit_request_text(exc)}; a plugin cannot end its "
                    "runner: the runner kept running"
                ) from None
        contexts[change.plugin].config = config
        return True

    async def call_host(plugin_id: str, capability: str, kwargs: dict[str, Any]) -> Any:
        request = CapabilityRequest(plugin=plugin_id, name=capability, kwargs=kwargs)
        try:
            return await peer_box[0].request(CAPABILITY, request, timeout=CAPABILITY_TIMEOUT)
        except RemoteError as exc:
            if exc.remote_type == _DENIED:
                raise CapabilityDenied(exc.remote_message) from None
            if exc.remote_type == _FAILED:
                raise CapabilityFailed(exc.remote_message) from None
            raise

    try:
        peer = await Peer.connect(
            bootstrap.control_address, bootstrap.token, name=bootstrap.runner_id, role=CONTROL_ROLE
        )
    except IsoplugError as exc:
        _log.critical("runner %s cannot reach the host: %s", bootstrap.runner_id, exc)
        return EXIT_CANNOT_CONNECT
    finally:
        # The control token is spent (the host takes one control connection per runner
        # process): forget it before any plugin code runs. The caller holds no other reference.
        bootstrap = msgspec.structs.replace(bootstrap, token="", log_token="")
    # Tasks are the plugins' by these (the setup-failure path ends those of a plugin whose
    # setup failed too).
    sources = frozenset(plugin_source(entry.id) for entry in bootstrap.plugins)
    # Where a teardown that does not finish in time is in the plugin's code.
    folders = {entry.id: entry.folder for entry in bootstrap.plugins}
    peer_box.append(peer)
    # Before any plugin code: a process it forks must not use the runner's loop or links.
    forked_away.arm(_own_fds(peer, bootstrap.health_fd))
    # Nor may the plugin close them: the runner would exit then, saying so.
    if (connection := peer.stream.fileno()) is not None:
        vital.note(CONTROL, connection)
    if bootstrap.health_fd >= 0:
        vital.note(HEALTH, bootstrap.health_fd)
    guard_closes()
    peer.register(PING, lambda _: os.getpid())
    peer.register(SHUTDOWN, shutdown_requested)
    # Before any plugin code: a SIGTERM the host did not send stops the runner as its request.
    outside_stop.listen(shutdown.set, bootstrap.teardown_timeout)
    # Asked by a host about to kill this runner for not being ready in time: which setup().
    setup_watch = SetupWatch()
    peer.register(SETUP_WHERE, setup_watch.where)
    # The table's own coroutine function: no coroutine in between, per call; with a memory
    # limit, one that says what a MemoryError from its address-space backstop means.
    limited = bootstrap.limits.memory is not None
    peer.register(
        CALL, call_noting_memory_errors if limited else table.call, params_type=CallRequest
    )
    peer.register(SET_LOG_LEVEL, levels.change, params_type=LogLevelChange)
    # Served at once whatever the plugins' load: a new configuration does not queue behind
    # their calls.
    peer.register(SET_CONFIG, set_config, params_type=ConfigChange, control=True)
    peer.set_limits(
        AdmissionLimits(
            max_running=bootstrap.max_concurrent_calls, max_queued=bootstrap.max_queued_calls
        )
    )
    # Queued per plugin, read at once (never pausing the reading of calls and cancels).
    table.events.limit = bootstrap.max_queued_events
    table.events.byte_limit = bootstrap.max_queued_event_bytes
    # Taken encoded: its size is what it weighs in the plugins' queues.
    peer.on_event(EVENT, table.events.offer_encoded, params_type=msgspec.Raw)
    # Before any plugin is imported, and after the runner's own descriptors are open (the
    # plugins get open_files beyond them).
    apply_limits(bootstrap.limits)
    # Before any plugin code: its atexit hooks are run, bounded, at the teardown's end.
    mark_plugin_hooks()
    if any(entry.id != bootstrap.runner_id for entry in bootstrap.plugins):
        # A group: the threads and pool work a member's code starts are that member's.
        attribute_threads()
    async with peer:
        setting_up = asyncio.ensure_future(
            _load_and_set_up(bootstrap, table, call_host, contexts, setup_watch)
        )
        asked = asyncio.ensure_future(shutdown.wait())
        try:
            await asyncio.wait({setting_up, asked}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # This task cancelled (the runner ending hard): the setup goes with it, as it did
            # when this task ran it.
            setting_up.cancel()
            raise
        finally:
            asked.cancel()
        if not setting_up.done():
            # Asked to stop while a plugin's setup awaits (a host stopping, a restart): the
            # setup is cancelled, as a task is, and the runner ends now rather than be
            # signalled at the host's shutdown deadline.
            setting_up.cancel()
            await asyncio.wait({setting_up})
            if not setting_up.cancelled() and setting_up.exception() is not None:
                _log.warning(
                    "a plugin's setup, cancelled at the shutdown, raised",
                    exc_info=setting_up.exception(),
                )
            left = await tear_down(table, sources, folders, bootstrap.teardown_timeout, 0)
            await _goodbye(peer, "runner shut down during its plugins' setup")
            if left:
                exit_leaving(0)
            return 0
        failures = setting_up.result()
        # Console handlers the plugins' imports and setups added, before their first records.
        render_consoles()
        # A loguru set up by an import to write a file alone: to the host too, from now on.
        keep_loguru_forwarded()
        report = ReadyReport(
            pid=os.getpid(),
            loaded={pid: plugin.summary() for pid, plugin in table.plugins.items()},
            failures=tuple(failures),
            inherited=inherited,
        )
        await peer.request(READY, report)
        failed = _failure_exit(failures, table)
        if failed is not None:
            # As at a stop: a plugin's import may have started tasks and threads (a setup
            # that failed too), which must neither hold the exit until the host's kill nor
            # take along what the plugin logged.
            code, goodbye = failed
            left = await tear_down(table, sources, folders, bootstrap.teardown_timeout, code)
            await _goodbye(peer, goodbye)
            if left:
                exit_leaving(code)
            return code
        closed = asyncio.ensure_future(peer.wait_closed())
        asked = asyncio.ensure_future(shutdown.wait())
        try:
            await asyncio.wait({closed, asked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            asked.cancel()
        # Ended before the plugins' tasks are looked for.
        await asyncio.wait({closed, asked})
        # The calls still queued never start: answered now, before the running ones are
        # cancelled (whose ends would start them).
        peer.close_admission("the runner is shutting down; the call had not started")
        left = await tear_down(table, sources, folders, bootstrap.teardown_timeout, 0)
        await _say_event_counts(peer, table)
        await _goodbye(peer, "runner shut down")
        if left:
            exit_leaving(0)
    return 0


async def _goodbye(peer: Peer, why: str) -> None:
    """Close the connection to the host, saying ``why``. The runner closes its own descriptors
    from here on (uvloop its signals' socket pair as each run of the loop ends): no longer
    a plugin's doing to exit for."""
    vital.disarm()
    await peer.aclose(why)


def _failure_exit(failures: list[LoadFailure], table: PluginTable) -> tuple[int, str] | None:
    """The exit code and goodbye of a runner that will not serve (a setup failed, or nothing
    could be loaded); None when it serves."""
    if any(f.stage == LoadStage.SETUP for f in failures):
        return EXIT_SETUP_FAILED, "a plugin's setup failed"
    if not table.plugins:
        return EXIT_NOTHING_LOADED, "no plugin could be loaded"
    return None


async def _load_and_set_up(
    bootstrap: Bootstrap,
    table: PluginTable,
    call_host: Any,
    contexts: dict[str, PluginContext],
    setup_watch: SetupWatch,
) -> list[LoadFailure]:
    failures: list[LoadFailure] = []
    if len(bootstrap.plugins) > 1:
        for entry in bootstrap.plugins:
            # A group: what runs in no one's work (a __del__ run by a collection during
            # another member's call) is still its code's member's.
            add_code_home(str(Path(entry.folder).resolve()), plugin_source(entry.id))
    for entry in bootstrap.plugins:
        try:
            # What a plugin prints, warns or fails with is its own (and so in the tasks it
            # starts): see isoplug.logs.sources.current_source.
            with attributed_to(plugin_source(entry.id)), member_code(plugin_source(entry.id)):
                plugin_class = load_plugin_class(entry)
                config = validate_config(entry.id, plugin_class, entry.config)
                instance = plugin_class()
                # Before setup: a plugin whose methods cannot be exported is not set up.
                loaded = LoadedPlugin(entry.id, instance)
        except PluginLoadError as exc:
            failures.append(LoadFailure(entry.id, LoadStage.IMPORT, str(exc), exc.traceback_text))
            continue
        except ConfigInvalid as exc:
            failures.append(LoadFailure(entry.id, LoadStage.CONFIG, str(exc)))
            continue
        except Exception as exc:
            failures.append(
                LoadFailure(
                    entry.id,
                    LoadStage.IMPORT,
                    f"plugin {entry.id!r}: creating {entry.entry} raised "
                    f"{type(exc).__name__}: {exc}",
                    traceback_text(exc),
                )
            )
            continue
        context = PluginContext(entry.id, frozenset(entry.capabilities), call_host, config)
        contexts[entry.id] = context
        try:
            with (
                attributed_to(plugin_source(entry.id)),
                member_code(plugin_source(entry.id)),
                setup_watch.running(entry.id, entry.folder),
            ):
                await _hook(instance.setup(context))
        except (Exception, *EXIT_REQUESTS) as exc:
            failures.append(
                LoadFailure(
                    entry.id,
                    LoadStage.SETUP,
                    f"plugin {entry.id!r}: setup() raised {type(exc).__name__}: {exc}",
                    traceback_text(exc),
                )
            )
            # Plugins of a group share fate: the runner will exit and be restarted.
            break
        table.add(loaded)
    return failures


async def _say_event_counts(peer: Peer, table: PluginTable) -> None:
    """Tell the host the final count of events handled and dropped (the teardown stopped the
    queues). Said even when both are 0: the host counts every event it sent that the runner
    did not confirm handled as not delivered, and without this word it can only say that
    the runner did not confirm them, not that none was handled."""
    if not peer.is_open:
        return
    counts = EventCounts(
        dropped=dict(table.events.drop_counts), handled=dict(table.events.handle_counts)
    )
    try:
        await peer.request(EVENT_COUNTS, counts, timeout=_LAST_WORD_TIMEOUT)
    except IsoplugError as exc:
        # The host is gone, or did not answer in time: it counts from the last health report
        # (the WARNING records said the drops).
        _log.debug("could not tell the host the final count of events: %s", exc)


async def _hook(result: Any) -> None:
    """Await what a hook returned: ``setup`` and ``teardown`` may be plain ``def`` (as
    ``on_config`` and methods may), run on the loop. Awaiting their None failed with "object
    NoneType can't be used in 'await' expression". Then, before the loop polls again, exit
    if the hook closed the runner's own descriptors (see isoplug.runner.vital_fds)."""
    if inspect.isawaitable(result):
        await result
    vital.exit_if_lost()


def _own_fds(peer: Peer, health_fd: int) -> list[int]:
    """The runner's connection to the host and its health link, as descriptor numbers."""
    fds = [health_fd] if health_fd >= 0 else []
    connection = peer.stream.fileno()
    if connection is not None:
        fds.append(connection)
    return fds
