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

    [environment]                       # optional: extra environment variables of its runner
    WEATHER_UNITS = "metric"

    [restart]                           # optional; these are the defaults
    policy = "on-failure"               # "on-failure" or "never"
    max_restarts = 5                    # more crashes than this within `window` s: failed
    window = 60.0
    backoff_initial = 0.5               # seconds before the first restart, doubled each time
    backoff_max = 30.0

Every problem is reported as a :class:`ManifestError` naming the file, the field and what is
wrong. Unknown fields are errors, so that a typo (``captabilities``) is caught instead of
silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from isoplug.errors import IsoplugError

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestError", "RestartPolicy", "load_manifest"]

MANIFEST_NAME = "plugin.toml"
#: Plugin ids become logger names (``plugin.<id>.stdout``) and runner names: no dots, no
#: spaces. 64 characters is plenty for a name and keeps log lines readable.
_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ATTRIBUTE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_POLICIES = ("on-failure", "never")
_START_METHODS = ("fork", "spawn")
#: A manifest is a few hundred bytes; anything near this size is not a manifest.
_MAX_MANIFEST_BYTES = 64 * 1024


class ManifestError(IsoplugError, ValueError):
    """A ``plugin.toml`` is missing, unreadable or invalid; ``str()`` says where and why."""

    def __init__(self, path: Path, field: str | None, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: field {field!r}" if field else str(path)
        super().__init__(f"{where}: {problem}")


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """When and how fast a crashed runner is started again."""

    policy: str = "on-failure"
    #: More crashes than this within ``window`` seconds is a crash loop: the plugin is failed.
    max_restarts: int = 5
    window: float = 60.0
    #: First delay before a restart; doubled after every crash, up to ``backoff_max``.
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def delay(self, consecutive_crashes: int) -> float:
        """Seconds to wait before restart number ``consecutive_crashes`` (1 for the first)."""
        exponent = max(0, consecutive_crashes - 1)
        return float(min(self.backoff_max, self.backoff_initial * 2.0**exponent))


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated ``plugin.toml``; ``directory`` is the plugin's directory."""

    id: str
    version: str
    entry: str
    directory: Path
    path: Path
    description: str = ""
    group: str | None = None
    log_level: str = "INFO"
    #: ``None``: isoplug's default (``isoplug.logs.handler.WRITE_THROUGH_RATE``).
    log_write_through_rate: float | None = None
    capabilities: tuple[str, ...] = ()
    environment: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    restart: RestartPolicy = RestartPolicy()
    #: ``"fork"``: forked from the host's zygote, which has imported the runner stack already
    #: (where the platform allows it; elsewhere spawned); ``"spawn"``: a fresh interpreter.
    start: str = "fork"

    @property
    def runner_id(self) -> str:
        """The runner this plugin lives in: its group, or a runner of its own."""
        return self.group or self.id


class _Fields:
    """Takes fields out of a TOML table, checking types; whatever is left over is unknown."""

    def __init__(self, path: Path, table: Mapping[str, Any], prefix: str = "") -> None:
        self._path = path
        self._left = dict(table)
        self._prefix = prefix

    def error(self, name: str, problem: str) -> ManifestError:
        return ManifestError(self._path, self._prefix + name, problem)

    def take(self, name: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
        if name not in self._left:
            if required:
                raise self.error(name, "is required but missing")
            return None
        value = self._left.pop(name)
        # bool is an int in Python, but `max_restarts = true` is a mistake.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.error(
                name, f"must be {_describe(kind)}, got {type(value).__name__} {value!r}"
            )
        return value

    def finish(self) -> None:
        if self._left:
            unknown = ", ".join(repr(self._prefix + name) for name in sorted(self._left))
            raise ManifestError(self._path, None, f"unknown field(s) {unknown}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _describe(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def load_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/plugin.toml``. Raises :class:`ManifestError`."""
    path = directory / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(path, None, f"cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise ManifestError(path, None, f"is {len(raw)} bytes; the limit is {_MAX_MANIFEST_BYTES}")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(path, None, f"is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, None, f"is not valid TOML: {exc}") from exc
    return parse_manifest(document, directory=directory, path=path)


def parse_manifest(document: Mapping[str, Any], *, directory: Path, path: Path) -> Manifest:
    """Validate an already-parsed TOML document. Raises :class:`ManifestError`."""
    fields = _Fields(path, document)
    plugin_id = fields.take("id", str, required=True)
    if not _ID_PATTERN.fullmatch(plugin_id):
        raise fields.error(
            "id",
            f"{plugin_id!r} is not a valid id: start with a letter, then up to 63 letters, "
            "digits, '_' or '-'",
        )
    version = fields.take("version", str, required=True)
    if not version.strip():
        raise fields.error("version", "must not be empty")
    entry = fields.take("entry", str, required=True)
    module, _, attribute = entry.partition(":")
    if not (_MODULE_PATTERN.fullmatch(module) and _ATTRIBUTE_PATTERN.fullmatch(attribute)):
        raise fields.error(
            "entry", f"must look like 'module:Attribute' (e.g. 'myplugin:MyPlugin'), got {entry!r}"
        )
    description = fields.take("description", str) or ""
    group = fields.take("group", str)
    if group is not None and not _ID_PATTERN.fullmatch(group):
        raise fields.error("group", f"{group!r} is not a valid group name (same rules as id)")
    log_level = (fields.take("log_level", str) or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise fields.error("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
    write_through_rate = fields.take("log_write_through_rate", (int, float))
    if write_through_rate is not None and not 0 <= write_through_rate < math.inf:
        raise fields.error(
            "log_write_through_rate",
            f"must be 0 or more records per second, got {write_through_rate!r}",
        )
    capabilities = fields.take("capabilities", list) or []
    for index, capability in enumerate(capabilities):
        if not isinstance(capability, str) or not capability:
            raise fields.error(
                f"capabilities[{index}]", f"must be a non-empty string, got {capability!r}"
            )
    environment = _parse_environment(fields)
    start = fields.take("start", str) or "fork"
    if start not in _START_METHODS:
        raise fields.error("start", f"must be one of {', '.join(map(repr, _START_METHODS))}")
    restart = _parse_restart(path, fields.take("restart", dict))
    fields.finish()
    return Manifest(
        id=plugin_id,
        version=version,
        entry=entry,
        directory=directory,
        path=path,
        description=description,
        group=group,
        log_level=log_level,
        log_write_through_rate=None if write_through_rate is None else float(write_through_rate),
        capabilities=tuple(capabilities),
        environment=MappingProxyType(environment),
        restart=restart,
        start=start,
    )


def _parse_environment(fields: _Fields) -> dict[str, str]:
    table = fields.take("environment", dict) or {}
    environment: dict[str, str] = {}
    for name, value in table.items():
        if not isinstance(value, str):
            raise fields.error(
                f"environment.{name}", f"must be a string, got {type(value).__name__} {value!r}"
            )
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise fields.error(f"environment.{name}", "is not a valid environment variable")
        environment[name] = value
    return environment


def _parse_restart(path: Path, table: Mapping[str, Any] | None) -> RestartPolicy:
    if table is None:
        return RestartPolicy()
    fields = _Fields(path, table, prefix="restart.")
    defaults = RestartPolicy()
    policy = fields.take("policy", str) or defaults.policy
    if policy not in _POLICIES:
        raise fields.error("policy", f"must be one of {', '.join(map(repr, _POLICIES))}")
    max_restarts = fields.take("max_restarts", int)
    numbers: dict[str, float] = {}
    for name in ("window", "backoff_initial", "backoff_max"):
        value = fields.take(name, (int, float))
        if value is not None and value < 0:
            raise fields.error(name, f"must not be negative, got {value}")
        numbers[name] = float(value) if value is not None else getattr(defaults, name)
    if max_restarts is not None and max_restarts < 0:
        raise fields.error("max_restarts", f"must not be negative, got {max_restarts}")
    fields.finish()
    return RestartPolicy(
        policy=policy,
        max_restarts=defaults.max_restarts if max_restarts is None else max_restarts,
        **numbers,
    )
