"""The control protocol between a host and its runner processes: names and payload shapes.

The host (:mod:`isoplug.host`) and the runner (:mod:`isoplug.runner`) never import each other;
both import this module, which is the whole contract between them:

1. The host starts ``python -m isoplug.runner`` (:data:`RUNNER_MODULE`) and writes one line of
   JSON, a :class:`Bootstrap`, on its standard input, then closes it. The token travels there
   and never on the command line, where every local user could read it.
2. The runner connects back with role ``"control"``, its runner id as the hello's name, and
   the token. It imports its plugins, runs their ``setup`` hooks, and sends the request
   :data:`READY` with a :class:`ReadyReport` (which plugins loaded, which failed and why).
3. The host calls :data:`CALL` (a :class:`CallRequest`, answered by a :class:`CallOutcome`),
   sends the event :data:`EVENT` (an :class:`EventDelivery`), and finally :data:`SHUTDOWN`.
   The runner calls :data:`CAPABILITY` (a :class:`CapabilityRequest`) to use a host
   capability. Health checks go over a channel of their own (:class:`HealthQuery`, below),
   answered by a thread of the runner; :data:`PING` still answers on the event loop.

Payloads follow the schema-evolution rules of :mod:`isoplug.wire.messages`: new fields go last
and have defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec

from isoplug.control.health import HealthQuery, HealthReport, WorkerState
from isoplug.errors import IsoplugError
from isoplug.wire import ErrorInfo

__all__ = [
    "CALL",
    "CAPABILITY",
    "CONTROL_ROLE",
    "CPU_LIMIT_GRACE",
    "EVENT",
    "EVENT_COUNTS",
    "EXIT_BAD_BOOTSTRAP",
    "EXIT_CANNOT_CONNECT",
    "EXIT_DESCRIPTORS_CLOSED",
    "EXIT_NOTHING_LOADED",
    "EXIT_NO_THREAD",
    "EXIT_SETUP_FAILED",
    "LOGS_ROLE",
    "MAX_OFFERED_NAMES",
    "MAX_OFFERED_NAME_CHARS",
    "PING",
    "READY",
    "RUNNER_MODULE",
    "SETUP_WHERE",
    "SET_CONFIG",
    "SET_LOG_LEVEL",
    "SHUTDOWN",
    "STOP_NOTICE",
    "TERMINATE_NOTICE",
    "ZYGOTE_MODULE",
    "Bootstrap",
    "CallOutcome",
    "CallRequest",
    "CapabilityDenied",
    "CapabilityRequest",
    "ConfigChange",
    "EventCounts",
    "EventDelivery",
    "HealthQuery",
    "HealthReport",
    "LoadFailure",
    "LoadStage",
    "LogLevelChange",
    "PluginEntry",
    "PluginSummary",
    "ReadyReport",
    "ResourceLimits",
    "WorkerState",
]

#: What the host runs as ``sys.executable -m RUNNER_MODULE``.
RUNNER_MODULE = "isoplug.runner"
#: What the host runs as ``sys.executable -m ZYGOTE_MODULE``: the template process that forks
#: runners (see :mod:`isoplug.runner.zygote` and :mod:`isoplug.host.zygote`).
ZYGOTE_MODULE = "isoplug.runner.zygote"
#: The hello role of the connection that carries requests and events.
CONTROL_ROLE = "control"
#: The role of the runner's second connection, which carries its log records.
LOGS_ROLE = "logs"

# Requests and events on the control connection.
READY = "runner.ready"
"""runner -> host request: a :class:`ReadyReport`; answered with ``None``."""
PING = "runner.ping"
"""host -> runner request: answered with the runner's pid, by its event loop (the host's
health checks use the health channel instead)."""
SHUTDOWN = "runner.shutdown"
"""host -> runner request: run teardown hooks, say goodbye, exit. Answered at once."""
SETUP_WHERE = "runner.setup_where"
"""host -> runner request, before it kills a runner not ready in time: which plugin's
``setup()`` runs and where it waits (text; "" when none runs). Answered by the event loop:
a setup that blocks it does not answer."""
CALL = "plugin.call"
"""host -> runner request: a :class:`CallRequest`, answered with a :class:`CallOutcome`."""
EVENT = "plugin.event"
"""host -> runner event: an :class:`EventDelivery` for the plugins subscribed to it."""
CAPABILITY = "host.capability"
"""runner -> host request: a :class:`CapabilityRequest`; answered with the capability's result."""
SET_LOG_LEVEL = "runner.set_log_level"
"""host -> runner request: a :class:`LogLevelChange`; filtering then happens at the source."""
SET_CONFIG = "runner.set_config"
"""host -> runner request: a plugin's new configuration (:class:`ConfigChange`); answers True
when the plugin took it live (its ``on_config``), False when it must restart to take it."""

EVENT_COUNTS = "runner.event_counts"
"""runner -> host request, once its plugins' events stopped (at a stop): an
:class:`EventCounts`, the last word on what its health reports said
(:attr:`HealthReport.events_dropped`, :attr:`HealthReport.events_handled`); answered with
``None``."""

# Exit codes of the runner that carry a meaning for the supervisor.
EXIT_BAD_BOOTSTRAP = 2
"""The bootstrap line on stdin was missing or malformed: a host bug, never retried."""
EXIT_SETUP_FAILED = 3
"""A plugin's ``setup`` raised (reported in the ready report); treated as a crash."""
EXIT_NOTHING_LOADED = 4
"""No plugin could be imported (reported in the ready report); retrying cannot help."""
EXIT_CANNOT_CONNECT = 5
"""The runner could not connect back to the host."""
EXIT_DESCRIPTORS_CLOSED = 6
"""A plugin closed descriptors the runner cannot work without (its control connection, its
health channel, its event loop's): it said which on its stderr and exited; a crash."""
EXIT_NO_THREAD = 7
"""The kernel refused a thread the runner cannot work without (a limit on tasks: a cgroup's
``pids.max``, ``ulimit -u``; or ``ulimit -v``): it said which limits are set, on
``isoplug.runner`` (on its stderr before its records reach the host), and exited; a crash,
restarted with backoff, as the shortage may pass."""


class CapabilityDenied(IsoplugError, PermissionError):
    """A plugin called a host capability its manifest does not grant (or nobody registered)."""

    # Named by its public place (isoplug.CapabilityDenied, which the docs name), not this
    # internal module: a RemoteError's remote_type and a printed traceback show this name.
    __module__ = "isoplug"


#: What the host writes on a runner's stdin (its lifeline), after the bootstrap, when it begins
#: stopping the runner: an outside SIGTERM from then on changes nothing, the stop being under
#: way (see isoplug.runner.outside_stop). The runner takes any byte there for it.
STOP_NOTICE = b"!"
#: What the host writes there right before its own SIGTERM (the stop's second step): that one
#: ends the runner at once, as by default.
TERMINATE_NOTICE = b"#"

#: Seconds of CPU time between a runner's SIGXCPU (its soft ``RLIMIT_CPU``, ``cpu_seconds``) and
#: the kernel's SIGKILL (the hard limit), for a plugin that handles SIGXCPU.
CPU_LIMIT_GRACE = 5


class ResourceLimits(msgspec.Struct, frozen=True):
    """A runner's resource limits (a plugin's ``[limits]``, see isoplug.host.limits); None:
    not limited. Sizes in bytes, CPU time in seconds."""

    #: RSS past which the host kills the runner (cgroup v2 ``memory.max`` where delegated);
    #: the runner sets an address-space backstop well above it (``RLIMIT_AS``).
    memory: int | None = None
    #: CPU time the runner may use (``RLIMIT_CPU``, SIGXCPU at it, SIGKILL a little later).
    cpu_seconds: int | None = None
    #: Descriptors the plugins may open beyond the runner's own (``RLIMIT_NOFILE``).
    open_files: int | None = None
    #: Processes and threads the plugins may start (``RLIMIT_NPROC``, per user; not for root).
    processes: int | None = None
    #: RSS that, held for a few checks in a row, gets the runner recycled (a graceful restart).
    recycle_rss: int | None = None
    #: The runner's address-space cap (``RLIMIT_AS``): None, the backstop computed from
    #: ``memory`` (none without it); 0, none at all; else this many bytes.
    address_space: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in msgspec.structs.astuple(self))


class PluginEntry(msgspec.Struct, frozen=True):
    """One plugin a runner must load."""

    id: str
    #: The plugin's directory: put on ``sys.path`` so that ``entry`` can be imported.
    path: str
    #: ``"module:attribute"``, the attribute being a :class:`isoplug.Plugin` subclass.
    entry: str
    #: The plugin's log level: a ``logging`` level name, or a number as text. The host folds
    #: its own settings into it (see :mod:`isoplug.runner.logging_setup` for where it applies).
    log_level: str = "INFO"
    #: Host capabilities the plugin may call; the host checks again on its side.
    capabilities: tuple[str, ...] = ()
    #: The plugin's configuration: its manifest's ``[config]`` with the host's overrides,
    #: validated in the runner against the schema the plugin declares. Packed as msgpack
    #: (:func:`pack_config`; base64 in the JSON line): JSON has no NaN or infinity, which a
    #: TOML float may be.
    packed_config: bytes = b""
    #: More folders for ``sys.path`` (absolute), after ``path``: the manifest's ``sys_path``.
    sys_path: tuple[str, ...] = ()
    #: ``path`` and ``sys_path`` as the file system's bytes (``os.fsencode`` in the host),
    #: which the runner goes by when they are there (:attr:`folder`, :attr:`folders`): a
    #: path whose bytes are not UTF-8 (a latin-1 folder name), or not ASCII under a C locale,
    #: is text with lone surrogates in Python, which JSON cannot carry; and a runner whose
    #: file system encoding is not the host's would read the same text as another path.
    #: ``path`` and ``sys_path`` then only name them (:func:`path_text`).
    path_bytes: bytes = b""
    sys_path_bytes: tuple[bytes, ...] = ()

    @property
    def folder(self) -> str:
        """The plugin's directory, as this process names it."""
        return os.fsdecode(self.path_bytes) if self.path_bytes else self.path

    @property
    def folders(self) -> tuple[str, ...]:
        """The ``sys_path`` folders, as this process names them."""
        if self.sys_path_bytes:
            return tuple(os.fsdecode(folder) for folder in self.sys_path_bytes)
        return self.sys_path

    @property
    def config(self) -> dict[str, Any]:
        """The configuration, unpacked."""
        if not self.packed_config:
            return {}
        config: dict[str, Any] = _config_decoder.decode(self.packed_config)
        return config


_config_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def path_text(path: str | os.PathLike[str]) -> str:
    """``path`` as text that any encoder takes: its bytes read as UTF-8, those that are not
    shown as ``\\xNN``. A name for messages, not a path to open (see
    :attr:`PluginEntry.path_bytes`)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def pack_config(config: Mapping[str, Any]) -> bytes:
    """``config`` as :attr:`PluginEntry.packed_config` carries it."""
    return msgspec.msgpack.encode(dict(config))


class Bootstrap(msgspec.Struct, frozen=True):
    """The one JSON line the host writes on a runner's stdin."""

    address: str
    #: Proves the control connection; the runner forgets it once connected.
    token: str
    #: Proves log connections: the runner and the processes it starts keep it to reconnect,
    #: so the host accepts it only from processes the kernel says descend from the runner.
    log_token: str
    runner_id: str
    plugins: tuple[PluginEntry, ...]
    #: Where the runner's log connection goes (the host serves it apart from the control
    #: connection, see isoplug.host.logbridge); empty: ``address``.
    log_address: str = ""
    #: The forwarding handler's write-through rate (records/s); ``None``: its default.
    log_write_through_rate: float | None = None
    #: How long the runner gives all teardown hooks together when asked to shut down.
    teardown_timeout: float = 3.0
    #: The runner's end of its health channel (a socket pair the runner inherits), answered
    #: by a thread of its own (see isoplug.runner.health); -1: none.
    health_fd: int = -1
    #: How often the runner's event loop stamps a heartbeat, and its health thread checks
    #: that it could run Python: the precision of what the health channel reports.
    health_tick: float = 0.1
    #: Sync plugin methods run in a pool of worker threads; a call that timed out may leave
    #: its thread running. The host recycles the runner past this many such threads, and the
    #: pool has as many threads to spare, so that those below the limit take no capacity.
    max_stuck_threads: int = 3
    #: How much the runner lowers its CPU priority at startup (see isoplug.runner.priority);
    #: 0: it keeps the host's.
    nice: int = 0
    #: The runner's resource limits, which it applies to itself before importing a plugin
    #: (see isoplug.runner.limits).
    limits: ResourceLimits = ResourceLimits()
    #: Calls of async methods run at once, calls queued past them, events queued per plugin
    #: (see SupervisorConfig.max_concurrent_calls and isoplug.rpc.admission).
    max_concurrent_calls: int = 256
    max_queued_calls: int = 1024
    max_queued_events: int = 1024
    #: The encoded events queued per plugin, in bytes (see
    #: SupervisorConfig.max_queued_event_bytes).
    max_queued_event_bytes: int = 64 * 2**20
    #: What ``sys.stdout``/``sys.stderr`` are in the runner (see Manifest.stdio): ``"records"``,
    #: or ``"pipe"``: the C text streams onto file descriptors 1 and 2, line-buffered.
    stdio: str = "records"
    #: ``address`` and ``log_address`` as the file system's bytes, which the runner goes by
    #: when they are there (:attr:`control_address`, :attr:`logs_address`): a unix socket's
    #: path is in ``$TMPDIR``, which may be as foreign to UTF-8 as a plugin's folder (see
    #: :attr:`PluginEntry.path_bytes`).
    address_bytes: bytes = b""
    log_address_bytes: bytes = b""

    @property
    def control_address(self) -> str:
        """Where the control connection goes, as this process names it."""
        return os.fsdecode(self.address_bytes) if self.address_bytes else self.address

    @property
    def logs_address(self) -> str:
        """Where the log connections go, as this process names it."""
        if self.log_address_bytes:
            return os.fsdecode(self.log_address_bytes)
        return self.log_address or self.control_address


class LogLevelChange(msgspec.Struct, frozen=True):
    """Set ``logger`` (``""``: the runner's root logger) to ``level`` in the runner; or, when
    ``plugin`` is set, the level of that whole plugin (``logger`` is then ignored)."""

    logger: str
    level: int
    plugin: str = ""


class ConfigChange(msgspec.Struct, frozen=True):
    """A plugin's whole new configuration (see :data:`SET_CONFIG`)."""

    plugin: str
    config: dict[str, Any]


class LoadStage:
    """Where loading a plugin failed."""

    IMPORT = "import"
    """Module missing, attribute missing, import raised, not a Plugin: restarting cannot help."""
    CONFIG = "config"
    """The plugin's configuration does not fit its schema: restarting cannot help, a new
    configuration can (``Host.set_config``, a reload)."""
    SETUP = "setup"
    """``setup()`` raised: may be transient (a database down), so the runner is restarted."""


class LoadFailure(msgspec.Struct, frozen=True):
    plugin_id: str
    stage: str
    message: str
    traceback: str = ""


#: The most methods, and the most event subscriptions, a plugin may declare; and the longest
#: name of either. The host refuses a plugin whose runner reports more (docs/plugins.md): a
#: runner's report must not make the host's memory, messages or event routing grow without end.
MAX_OFFERED_NAMES: Final = 1000
MAX_OFFERED_NAME_CHARS: Final = 200

OfferedName = Annotated[str, msgspec.Meta(max_length=MAX_OFFERED_NAME_CHARS)]
OfferedNames = Annotated[tuple[OfferedName, ...], msgspec.Meta(max_length=MAX_OFFERED_NAMES)]


class PluginSummary(msgspec.Struct, frozen=True):
    """What a loaded plugin offers: its callable methods and the events it subscribes to
    (checked against the limits above when the host decodes it)."""

    methods: OfferedNames = ()
    events: OfferedNames = ()
    #: Public functions its class defines without ``@isoplug.method`` (none of the
    #: ``isoplug.Plugin`` base's): a call of one says what is missing.
    unmarked: OfferedNames = ()


#: Processes a ready report names as inherited, at most (see ReadyReport.inherited).
MAX_INHERITED: Final = 64


class ReadyReport(msgspec.Struct, frozen=True):
    pid: int
    loaded: dict[str, PluginSummary] = {}
    failures: tuple[LoadFailure, ...] = ()
    #: The processes the runner already had when its own code started (pid -> start time in
    #: clock ticks after boot): its interpreter command's, not its plugins'
    #: (:mod:`isoplug.runner.inherited`).
    inherited: Annotated[dict[int, int], msgspec.Meta(max_length=MAX_INHERITED)] = {}


class CallRequest(msgspec.Struct, frozen=True):
    plugin: str
    method: str
    kwargs: dict[str, Any] = {}
    args: tuple[Any, ...] = ()
    #: The host's number for this call (0: none), which the runner's health reports name the
    #: worker thread running it by.
    call_id: int = 0
    #: The W3C trace context of the host's active span ("": none), so that the plugin's
    #: records and spans join the host's trace (see isoplug.runner.tracing).
    traceparent: str = ""
    tracestate: str = ""


class CallOutcome(msgspec.Struct, frozen=True):
    """The result of a plugin method, or why it failed (``error`` set, ``result`` ignored).

    Failures travel as a value rather than as an error response so that the runner can say
    *which* failure it was (unknown method, bad arguments, the method raised) with the codes
    of :class:`isoplug.errors.RemoteError`'s subclasses.
    """

    #: The runner sends it already encoded (a ``msgspec.Raw``), having checked that it can be.
    result: Any = None
    error: ErrorInfo | None = None


class EventDelivery(msgspec.Struct, frozen=True):
    event: str
    payload: Any = None
    #: As :attr:`CallRequest.traceparent`: the span the host published the event in.
    traceparent: str = ""
    tracestate: str = ""


class EventCounts(msgspec.Struct, frozen=True, array_like=True):
    """The events of each plugin of a runner, in all (plugin id -> count; plugins at 0 left
    out): those a handler took, and those dropped (its queue full, or still queued when the
    runner stopped). The host, which counts what it sent, counts the rest as not delivered."""

    dropped: dict[str, int] = {}
    handled: dict[str, int] = {}


class CapabilityRequest(msgspec.Struct, frozen=True):
    #: The calling plugin: must be one of this runner's plugins, and be granted ``name``.
    plugin: str
    name: str
    kwargs: dict[str, Any] = {}
