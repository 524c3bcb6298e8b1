"""``plugin.toml``: what a plugin is, parsed and validated into a frozen :class:`Manifest`.

A plugin is a directory holding a ``plugin.toml``::

    id = "weather"                      # required: letters, digits, "_" and "-"
    version = "1.2.0"                   # required
    description = "Fetches forecasts"   # optional
    entry = "weather:WeatherPlugin"     # required: module:attribute, relative to the directory
    group = "io"                        # optional: plugins of one group share a runner
    log_level = "INFO"                  # optional: DEBUG, INFO, WARNING, ERROR, CRITICAL
    log_write_through_rate = 20000      # optional: records/s sent one by one, each in the
                                        # kernel before logging returns; 0 batches them all
                                        # (less CPU; a crash may take the last millisecond)
    capabilities = ["http.get"]         # optional: host capabilities the plugin may call
    start = "fork"                      # optional: "fork" (default: forked from the host's
                                        # zygote, fast) or "spawn" (a fresh interpreter)
    stdio = "records"                   # optional: "records" (default: each printed line a
                                        # record made in the runner, with its location,
                                        # thread and trace ids) or "pipe" (print() writes to
                                        # the runner's stdout pipe, the host makes the
                                        # records: a cheaper print(), no location or thread
                                        # per line; not in a group)

    inherit_environment = ["WEATHER_*"] # optional: host variables it may see (true: all)
    python = ".venv"                    # optional: its interpreter, or a virtual environment
    sys_path = ["src"]                  # optional: more folders for its sys.path
    reload_on = ["*.py"]                # optional: files whose change restarts it under
                                        # hot reload (glob patterns; this is the default)

    [environment]                       # optional: extra environment variables of its runner
    WEATHER_UNITS = "metric"

    [config]                            # optional: the plugin's settings (see below)
    units = "metric"

    [limits]                            # optional: all unset by default (no limits)
    memory = "512MB"                    # RSS past which the runner is killed
    recycle_rss = "400MB"               # RSS that, held, gets the runner restarted gracefully
    cpu_seconds = 600                   # CPU time, then SIGXCPU
    open_files = 256                    # descriptors the plugin may open
    processes = 32                      # processes/threads it may start, + 48 for the
                                        # runner's own threads (per user; not for root)
    address_space = false               # optional: the runner's RLIMIT_AS (default with
                                        # memory: a backstop; false: none; or a size)

    [restart]                           # optional; these are the defaults
    policy = "on-failure"               # "on-failure" or "never"
    max_restarts = 5                    # more crashes than this within `window` s, or
                                        # starts in a row never ready: failed
    window = 60.0
    backoff_initial = 0.5               # seconds before the first restart, doubled each time
    backoff_max = 30.0

Every problem is reported as a :class:`ManifestError` naming the file, the field and what is
wrong, quoting the value. Unknown fields are errors, so that a typo (``captabilities``) is
caught instead of silently ignored: all of them are named at once, and a key TOML read into a
table because it comes after that table's header is said to be misplaced, with where it
belongs (:mod:`isoplug.host.manifest_keys`). The fields are declared once, as ``msgspec``
structs (:class:`PluginToml`): msgspec checks types, ranges and patterns, and says where
(``$.restart.window``); :func:`_manifest_error` turns that into the file and field a user
reads. The message quotes
the plugin's folder, so :class:`ManifestError` passes it through the sanitizer. Nesting deeper
than :data:`MAX_NESTING`, integers beyond 64 bits and a folder name that cannot be shown as it
is (:mod:`isoplug.host.manifest_file`) are errors too: they would break what reads, quotes or
sends the manifest later.

``[config]`` is free-form TOML here: the plugin declares its schema in code
(``config_schema``, a ``msgspec.Struct``), and the runner validates the table, merged with the
host's overrides, against it (see :mod:`isoplug.runner.loader`).

``[limits]`` is enforced by the runner on itself (rlimits) and by the host (RSS): see
:mod:`isoplug.host.limits` and :mod:`isoplug.runner.limits`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import msgspec

from isoplug.control import ResourceLimits
from isoplug.host.manifest_environment import ENVIRONMENT_SCHEMA, check_variable
from isoplug.host.manifest_file import MANIFEST_NAME, MAX_NESTING, read_manifest_document
from isoplug.host.manifest_keys import key_problems
from isoplug.host.manifest_paths import folder_of, interpreter
from isoplug.host.manifest_types import Manifest, ManifestError, RestartPolicy
from isoplug.sizes import parse_size
from isoplug.validation import explain_validation_error

__all__ = [
    "MANIFEST_NAME",
    "MAX_NESTING",
    "Manifest",
    "ManifestError",
    "RestartPolicy",
    "load_manifest",
    "manifest_schema",
    "merge_config",
]

#: Plugin ids become logger names (``plugin.<id>.stdout``) and runner names: no dots, no
#: spaces. 64 characters is plenty for a name and keeps log lines readable. msgspec checks
#: with Python's ``re``, whose ``$`` also matches before a last newline ("calc\n" would pass):
#: ``(?!\n)`` refuses that, and means nothing to a JSON Schema reader's ECMAScript ``$``.
_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$(?!\n)"
#: A Python name may hold letters of any script (``modulé``), as an ``import`` does: every
#: non-ASCII character passes here, in Python and in a JSON Schema's regex alike (the schema
#: is read by editors' JavaScript regexes, which have no Python identifier class); the exact
#: check is ``str.isidentifier`` (:func:`_check_entry`).
_NAME_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ or not ASCII
_NAME_REST = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]*"  # also 0-9
_NAME = _NAME_START + _NAME_REST
_ENTRY_PATTERN = rf"^{_NAME}(\.{_NAME})*:{_NAME}$(?!\n)"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: TOML's integers are 64-bit signed; Python's parser reads any size, the wire takes 64 bits.
_INT_RANGE = (-(2**63), 2**63 - 1)


_Id = Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
#: A level name in any case, as parse_manifest accepts it (JSON Schema has no flag for case).
_LOG_LEVEL_SCHEMA = {
    "pattern": "^(?:"
    + "|".join("".join(f"[{c}{c.lower()}]" for c in level) for level in _LOG_LEVELS)
    + ")$",
    "examples": list(_LOG_LEVELS),
    "description": f"{', '.join(_LOG_LEVELS)} (any case)",
}
#: Finite: an ``inf`` in a backoff or a rate is a mistake, not a setting.
_NonNegative = Annotated[float, msgspec.Meta(ge=0, le=1e12)]


class RestartTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    policy: Literal["on-failure", "never"] = "on-failure"
    max_restarts: Annotated[int, msgspec.Meta(ge=0)] = RestartPolicy.max_restarts
    window: _NonNegative = RestartPolicy.window
    backoff_initial: _NonNegative = RestartPolicy.backoff_initial
    backoff_max: _NonNegative = RestartPolicy.backoff_max


#: What parse_size accepts and _limits keeps (at least one byte), for editors: a whole number
#: of bytes (``B`` or no unit) of 1 or more, or a number with a unit that is not zero. Not
#: said: a fraction of a unit under one byte ("0.0001KB") and sizes past 2**63 bytes.
_SIZE_PATTERN = (
    r"^\s*(?:[0-9]*[1-9][0-9]*(?:\.[0-9]+)?\s*(?:[bB]|[kKmMgGtT][iI]?[bB])?"
    r"|0+\.[0-9]*[1-9][0-9]*\s*[kKmMgGtT][iI]?[bB])\s*$"
)
#: A size: bytes, or text with a unit (checked by parse_size, to name the field and the value;
#: the pattern is for the schema only).
_Size = (
    Annotated[int, msgspec.Meta(ge=1)]
    | Annotated[
        str,
        msgspec.Meta(extra_json_schema={"pattern": _SIZE_PATTERN, "examples": ["512MB", "1GiB"]}),
    ]
)

#: The largest values of ``[limits]``: beyond them the runner's rlimits (C longs, with what it
#: adds: the address-space backstop is twice ``memory`` and more) would overflow, and no
#: machine has that much to limit anyway. The error names the largest allowed value.
MAX_MEMORY = 1024**5  # 1024 TiB
MAX_CPU_SECONDS = 10**9  # some 31 years
#: The kernel refuses more descriptors per process than ``fs.nr_open``, at most 2**30.
MAX_OPEN_FILES = 2**30
#: ``pid_max`` is at most 2**22 (4194304): no user can have more tasks.
MAX_PROCESSES = 2**22
#: ``memory`` and ``recycle_rss`` below this are refused: a runner needs some 20-25 MiB
#: resident before it imports a plugin, so it would be killed (or recycled) as it starts.
MIN_MEMORY = 32 * 1024**2


_CpuSeconds = Annotated[int, msgspec.Meta(ge=1, le=MAX_CPU_SECONDS)]
_OpenFiles = Annotated[int, msgspec.Meta(ge=1, le=MAX_OPEN_FILES)]
_Processes = Annotated[int, msgspec.Meta(ge=1, le=MAX_PROCESSES)]


class LimitsTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    memory: _Size | None = None
    cpu_seconds: _CpuSeconds | None = None
    open_files: _OpenFiles | None = None
    processes: _Processes | None = None
    recycle_rss: _Size | None = None
    #: The runner's address-space cap (RLIMIT_AS): unset or true, the backstop computed from
    #: ``memory``; false, none; a size, that.
    address_space: bool | _Size | None = None


class PluginToml(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What ``plugin.toml`` may hold (see the module docstring)."""

    id: _Id
    version: Annotated[str, msgspec.Meta(min_length=1)]
    entry: Annotated[str, msgspec.Meta(pattern=_ENTRY_PATTERN)]
    description: str = ""
    group: _Id | None = None
    #: Checked in parse_manifest, to say the names; the schema says them for editors.
    log_level: Annotated[str, msgspec.Meta(extra_json_schema=_LOG_LEVEL_SCHEMA)] = "INFO"
    log_write_through_rate: _NonNegative | None = None
    capabilities: list[Annotated[str, msgspec.Meta(min_length=1)]] = []
    #: Values are checked after decoding, to name the variable (msgspec says ``[...]``).
    environment: Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=ENVIRONMENT_SCHEMA)] = {}
    start: Literal["fork", "spawn"] = "fork"
    stdio: Literal["records", "pipe"] = "records"
    inherit_environment: list[Annotated[str, msgspec.Meta(min_length=1)]] | bool = []
    python: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    sys_path: list[Annotated[str, msgspec.Meta(min_length=1)]] = []
    reload_on: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(
        default_factory=lambda: list(Manifest.reload_on)
    )
    restart: RestartTable = RestartTable()
    config: dict[str, Any] = {}
    limits: LimitsTable = LimitsTable()


#: What a value must look like where msgspec would quote a bare regex.
_PATTERN_HINTS = {
    "id": "start with an ASCII letter, then up to 63 ASCII letters, digits, '_' or '-'",
    "group": (
        "same rules as id: start with an ASCII letter, then up to 63 ASCII letters, digits, "
        "'_' or '-'"
    ),
    "entry": "must look like 'module:Attribute' (e.g. 'myplugin:MyPlugin')",
}


def load_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/plugin.toml``. Raises :class:`ManifestError`."""
    path, document = read_manifest_document(directory)
    return parse_manifest(document, directory=directory, path=path)


def parse_manifest(document: Mapping[str, Any], *, directory: Path, path: Path) -> Manifest:
    """Validate an already-parsed TOML document. Raises :class:`ManifestError`."""
    _check_values(path, document)
    misplaced_or_unknown = key_problems(document, PluginToml, string_tables={"environment"})
    if misplaced_or_unknown is not None:
        raise ManifestError(path, None, misplaced_or_unknown)
    try:
        fields = msgspec.convert(document, PluginToml)
    except msgspec.ValidationError as exc:
        raise _manifest_error(path, document, str(exc)) from None
    entry = _check_entry(path, fields.entry)
    log_level = fields.log_level.upper()
    if log_level not in _LOG_LEVELS:
        levels = ", ".join(map(repr, _LOG_LEVELS))
        problem = f"must be one of {levels} (in any case), got {fields.log_level!r}"
        raise ManifestError(path, "log_level", problem)
    for name, value in fields.environment.items():
        check_variable(path, name, value)
    if fields.stdio == "pipe" and fields.group is not None:
        problem = (
            f"'pipe' cannot say which plugin of group {fields.group!r} printed a line (the "
            'members share the runner\'s pipes); use stdio = "records" or a runner of its own'
        )
        raise ManifestError(path, "stdio", problem)
    python = interpreter(path, directory, fields.python) if fields.python else None
    sys_path = tuple(
        folder_of(path, directory, f"sys_path[{index}]", folder)
        for index, folder in enumerate(fields.sys_path)
    )
    inherit = fields.inherit_environment
    return Manifest(
        id=fields.id,
        version=fields.version,
        entry=entry,
        directory=directory,
        path=path,
        description=fields.description,
        group=fields.group,
        log_level=log_level,
        log_write_through_rate=fields.log_write_through_rate,
        capabilities=tuple(fields.capabilities),
        environment=MappingProxyType(dict(fields.environment)),
        restart=_restart_policy(path, fields.restart),
        config=MappingProxyType(fields.config),
        start=fields.start,
        stdio=fields.stdio,
        inherit_environment=inherit if isinstance(inherit, bool) else tuple(inherit),
        python=python,
        sys_path=sys_path,
        reload_on=tuple(fields.reload_on),
        limits=_limits(path, fields.limits),
    )


def _restart_policy(path: Path, table: RestartTable) -> RestartPolicy:
    """The ``[restart]`` table, whose values msgspec checked one by one, checked as a whole."""
    if table.backoff_max < table.backoff_initial:
        raise ManifestError(
            path,
            "restart.backoff_max",
            f"must not be less than restart.backoff_initial: backoff_max = "
            f"{table.backoff_max:g}, backoff_initial = {table.backoff_initial:g}",
        )
    return RestartPolicy(
        table.policy, table.max_restarts, table.window, table.backoff_initial, table.backoff_max
    )


def _check_values(path: Path, document: Mapping[str, Any]) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` and integers TOML does not have, before
    anything recursive (msgspec, ``repr``, the encoders to the runner) walks the document.

    Iterative, so that a document as deep as the parser could read is checked all the same.
    """
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while pending:
        value, keys = pending.pop()
        if isinstance(value, Mapping | list):
            if len(keys) > MAX_NESTING:
                raise ManifestError(
                    path,
                    _key_path(keys[:_SHOWN_KEYS]) + "...",
                    f"nests tables and arrays more than {MAX_NESTING} levels deep",
                )
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            pending.extend((item, (*keys, key)) for key, item in items)
        elif isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            problem = f"is an integer outside TOML's range (64-bit signed): {_number(value)}"
            raise ManifestError(path, _key_path(keys), problem)


#: The keys named of a path that nests too deeply: enough to find it in the file.
_SHOWN_KEYS = 8


#: Digits of an integer quoted in full; a longer one is shown by its start and length.
_MAX_DIGITS = 40


def _number(value: int) -> str:
    digits = str(value)
    return digits if len(digits) <= _MAX_DIGITS else f"{digits[:20]}... ({len(digits)} digits)"


def _key_path(keys: tuple[str | int, ...]) -> str:
    """``config.db[0].port``, as :func:`isoplug.validation.explain_validation_error` says."""
    parts = [f"[{key}]" if isinstance(key, int) else f".{key}" for key in keys]
    return "".join(parts).removeprefix(".")


def _limits(path: Path, table: LimitsTable) -> ResourceLimits:
    sizes: dict[str, int | None] = {}
    for name in ("memory", "recycle_rss", "address_space"):
        value = getattr(table, name)
        if isinstance(value, bool):
            sizes[name] = None if value else 0  # false: no cap (0, see ResourceLimits)
            continue
        sizes[name] = None if value is None else _size(path, f"limits.{name}", value, name)
    memory, recycle = sizes["memory"], sizes["recycle_rss"]
    if memory is not None and recycle is not None and recycle >= memory:
        raise ManifestError(
            path,
            "limits.recycle_rss",
            f"{table.recycle_rss!r} must be below limits.memory ({table.memory!r}): the runner "
            "is killed at memory, so it would never be recycled",
        )
    capped = sizes["address_space"]
    if memory is not None and capped and capped <= memory:
        raise ManifestError(
            path,
            "limits.address_space",
            f"{table.address_space!r} must be above limits.memory ({table.memory!r}): the "
            "address space holds the memory and more, so the cap would stop the plugin first "
            "and memory would never be reached",
        )
    return ResourceLimits(
        memory=memory,
        cpu_seconds=table.cpu_seconds,
        open_files=table.open_files,
        processes=table.processes,
        recycle_rss=recycle,
        address_space=sizes["address_space"],
    )


def _size(path: Path, field: str, value: int | str, name: str) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ManifestError(path, field, str(exc)) from None
    if size == 0:
        raise ManifestError(path, field, f"{value!r} is no memory at all")
    if size > MAX_MEMORY:
        raise ManifestError(
            path, field, f"{value!r} is too large: at most {MAX_MEMORY} bytes (1024 TiB)"
        )
    least = MIN_MEMORY if name != "address_space" else _MIN_ADDRESS_SPACE
    if size < least:
        raise ManifestError(
            path,
            field,
            f"{value!r} is below the least allowed, {least // 1024**2} MiB: "
            + (
                "a runner holds some 20-25 MiB before it imports a plugin, so it would be "
                f"{'killed' if name == 'memory' else 'recycled'} as it starts"
                if name != "address_space"
                else "a runner maps some 300 MiB to start, and its worker threads reserve 8 "
                "MiB of stack each"
            ),
        )
    return size


#: ``address_space`` below this is refused: a Python runner maps some 250-300 MiB of address
#: space (libraries, thread stacks) before it imports a plugin, and each thread of its worker
#: pool (up to 32 plus the stuck ones) reserves an 8 MiB stack: at 256 MiB, measured, it could
#: not start the thread of a plugin's first sync method.
_MIN_ADDRESS_SPACE = 1024**3


def _check_entry(path: Path, entry: str) -> str:
    """``entry`` as the runner imports it: NFKC-normalized, as Python normalizes the names
    of an ``import`` statement and of a ``class`` (``ﬁle`` is ``file``), so the module and
    class the manifest names are those the source names. Raises :class:`ManifestError` for
    a part that is not a Python identifier (the pattern let every non-ASCII character by)."""
    normalized = unicodedata.normalize("NFKC", entry)
    module, _, attribute = normalized.partition(":")
    for name in (*module.split("."), attribute):
        if not name.isidentifier():
            problem = (
                f"{entry!r} is not valid: {name!r} is not a Python name (letters, digits "
                "and '_', not starting with a digit); it must look like 'module:Attribute'"
            )
            raise ManifestError(path, "entry", problem)
    return normalized


def _manifest_error(path: Path, document: Mapping[str, Any], message: str) -> ManifestError:
    """msgspec's ``Expected `float` >= 0.0 - at `$.restart.window```, as a user reads it:
    ``plugin.toml: field 'restart.window': must be a number of 0 or more, got integer -1``."""
    explained = explain_validation_error(message, document, _PATTERN_HINTS, PluginToml)
    return ManifestError(path, explained.field, explained.problem)


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` over it, key by key; tables present in both are merged the
    same way (so ``{"db": {"port": 1}}`` over ``{"db": {"host": "h"}}`` keeps the host)."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = merge_config(below, value)
        else:
            merged[key] = value
    return merged


#: What an editor shows of a plugin.toml as a whole (``isoplug schema``).
MANIFEST_DESCRIPTION = (
    "The manifest of an isoplug plugin: its id, version and entry point (module:Class), and "
    "how its runner process is started, restarted, checked and limited; [config] holds the "
    "plugin's own settings. See docs/plugins.md."
)


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of plugin.toml (its ``[config]``: any table)."""
    schema: dict[str, Any] = msgspec.json.schema(PluginToml)
    # Its own words, not PluginToml's docstring: that one is for isoplug's developers, and
    # gone under python -OO.
    definitions = schema["$defs"]
    definitions["PluginToml"] = {
        "title": "plugin.toml",
        "description": MANIFEST_DESCRIPTION,
        **{k: v for k, v in definitions["PluginToml"].items() if k not in ("title", "description")},
    }
    return schema
