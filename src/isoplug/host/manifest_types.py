"""What a plugin is, once its ``plugin.toml`` is read (:mod:`isoplug.host.manifest` reads and
validates it): a frozen :class:`Manifest`, its :class:`RestartPolicy`, and the
:class:`ManifestError` of a file that is not one."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from isoplug.control import ResourceLimits
from isoplug.errors import IsoplugError, _unpickled
from isoplug.wire.sanitize import clean_path, clean_text

__all__ = ["Manifest", "ManifestError", "RestartPolicy"]

#: A message quotes a path and a value or two: generous, yet bounded whatever the file holds.
_MAX_MESSAGE_CHARS = 8000


class ManifestError(IsoplugError, ValueError):
    """A ``plugin.toml`` is missing, unreadable or invalid; ``str()`` says where and why.

    Everything in it comes from a plugin's folder (its path, its keys and values, msgspec's
    words about them), so the message is built here, once, and passed through the sanitizer:
    control characters are escapes and no line of it starts at column 0 but the first.
    ``field`` is the key path as the file spells it; ``problem`` is sanitized like the message.
    """

    def __init__(self, path: Path, field: str | None, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = clean_text(problem, _MAX_MESSAGE_CHARS)
        # A folder name that is not UTF-8 holds lone surrogates, shown as \udcXX; one holding a
        # line break or a tab shows it escaped, not as a break of the message.
        shown = clean_path(path, _MAX_MESSAGE_CHARS)
        where = f"{shown}: field {field!r}" if field else shown
        super().__init__(clean_text(f"{where}: {problem}", _MAX_MESSAGE_CHARS))

    def __reduce__(self) -> tuple[Any, ...]:
        # The constructor's arguments are not ``args`` (its message is built from them).
        return (_unpickled, (type(self), self.args), self.__dict__)


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """When and how fast a crashed runner is started again."""

    policy: str = "on-failure"
    #: More crashes than this within ``window`` seconds is a crash loop: the plugin is failed;
    #: so is more starts than this in a row that ended before it was ready, however far apart.
    max_restarts: int = 5
    window: float = 60.0
    #: First delay before a restart; doubled after every crash, up to ``backoff_max``.
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ValueError(f"RestartPolicy: {problem}")

    def problem(self) -> str | None:
        """What is wrong with these settings (None: nothing), naming the settings: a NaN or
        an infinity would make every comparison with the clock false (a crash loop never
        seen, or a backoff never ended), and a ``backoff_max`` under ``backoff_initial``
        is a mistake in one of the two, not a cap."""
        for name in ("window", "backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                return f"{name} must be a finite number of 0 or more, not {value!r}"
        if self.backoff_max < self.backoff_initial:
            return (
                f"backoff_max ({self.backoff_max:g}) must not be less than backoff_initial "
                f"({self.backoff_initial:g})"
            )
        return None

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
    #: Host environment variables the runner gets besides the basics (names or ``fnmatch``
    #: patterns); True: the whole host environment. See :mod:`isoplug.host.environment`.
    inherit_environment: tuple[str, ...] | bool = ()
    #: The interpreter of the plugin's runner (absolute); None: the host's.
    python: Path | None = None
    #: Folders put on the runner's ``sys.path`` after the plugin's own (absolute).
    sys_path: tuple[Path, ...] = ()
    #: Under hot reload, a changed file in the plugin's folder restarts it when its path
    #: (relative to the folder) matches one of these, as :meth:`pathlib.PurePath.match` does.
    reload_on: tuple[str, ...] = ("*.py",)
    #: The ``[config]`` table as TOML gave it (validated by the plugin's schema, in its
    #: runner).
    config: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: ``"fork"``: forked from the host's zygote, which has imported the runner stack already
    #: (where the platform allows it; elsewhere spawned); ``"spawn"``: a fresh interpreter.
    start: str = "fork"
    #: ``"records"``: ``print()`` and ``sys.stdout``/``sys.stderr`` writes become log records
    #: inside the runner (location, thread, trace ids; see isoplug.logs.streams);
    #: ``"pipe"``: they are the C text streams onto the runner's stdout/stderr pipes, which
    #: the host reads and makes records of (a cheaper ``print()``; see docs/plugins.md).
    stdio: str = "records"
    #: The ``[limits]`` table (sizes in bytes); all None: no limits.
    limits: ResourceLimits = dataclasses.field(default_factory=ResourceLimits)

    @property
    def runner_id(self) -> str:
        """The runner this plugin lives in: its group, or a runner of its own."""
        return self.group or self.id
