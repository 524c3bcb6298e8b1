"""The package's layers depend only downwards, and the wire layer does no I/O at all."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import isoplug

#: Which other layers each layer may import from. A layer is a subpackage or a module directly
#: under ``isoplug``. ``errors`` is the floor: every layer may import it. ``isoplug`` is the
#: bare package (its ``__init__``): the public face, which may re-export any layer below the
#: command line, so only the command line (and ``testing``, a user of the public API) imports
#: from it; everything else imports a name
#: from the module that defines it.
#:
#: To add a layer, add its line here (and add it to the lines of the layers that may use it).
#: A module under ``src/isoplug`` that belongs to no layer listed here fails the test, so a new
#: layer cannot slip in without a decision about where it sits.
_BELOW_CLI = frozenset(
    {
        "errors",
        "log_guard",
        "validation",
        "arguments",
        "sizes",
        "cpu_wait",
        "stdlib_paths",
        "off_loop",
        "thread_limits",
        "zygote_sharing",
        "lazy_names",
        "loop_closed",
        "release",
        "wire",
        "transport",
        "rpc",
        "control",
        "logs",
        "exporters",
        "runner",
        "host",
    }
)
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    # msgspec's validation errors explained (manifests, plugin configurations).
    "validation": frozenset(),
    # Checks of what a caller passes (timeouts, lists of names, plain functions), said in the
    # same words by the host, the log receiver and the test harness.
    "arguments": frozenset(),
    # Sizes as plugin.toml writes them ("512MB") and as messages print them.
    "sizes": frozenset(),
    # How long a thread waited for a CPU (the kernel's schedstat): both sides' health checks.
    "cpu_wait": frozenset(),
    # Which source files are the standard library's (frames a report of where code waits or
    # failed walks past): the runner's health and the remote tracebacks of rpc.
    "stdlib_paths": frozenset(),
    # A blocking step in a thread of its own, never on the application's default executor:
    # the host's supervision, and a TCP name's resolution in transport.
    "off_loop": frozenset(),
    # A thread the kernel refused, said with the limits set here: the host's threads and a
    # runner's own.
    "thread_limits": frozenset(),
    # Whether the hosts of the process share zygotes: the pool's switch, which the pytest
    # plugin turns on without importing the host.
    "zygote_sharing": frozenset(),
    # A package's names imported on first use: the bare package's and testing's.
    "lazy_names": frozenset(),
    # Tasks of an event loop closed under them, ended from outside it: the host's, and the
    # connections transport serves on that loop.
    "loop_closed": frozenset({"log_guard"}),
    # isoplug's version: the handshake says it.
    "release": frozenset(),
    # The sans-IO protocol: messages, codec, framing, the connection state machine.
    "wire": frozenset({"errors", "release"}),
    # isoplug's own loggers, which an application's raising handler cannot make raise, and
    # how a failed handler is reported: every layer that logs makes its loggers there. wire:
    # the report quotes records, sanitized.
    "log_guard": frozenset({"wire"}),
    # Byte streams only: it knows nothing of frames or messages.
    "transport": frozenset({"errors", "off_loop", "log_guard", "loop_closed"}),
    "rpc": frozenset({"errors", "log_guard", "wire", "transport", "stdlib_paths"}),
    # off_loop: a standalone receiver's start removes dead processes' socket folders.
    "logs": frozenset({"errors", "arguments", "log_guard", "off_loop", "wire", "transport", "rpc"}),
    "exporters": frozenset({"errors", "wire", "logs"}),
    # The host <-> runner control protocol: method names, bootstrap and payload shapes. The
    # one module both sides share, so that neither imports the other.
    "control": frozenset({"errors", "wire"}),
    "runner": frozenset(
        {
            "errors",
            "log_guard",
            "validation",
            "sizes",
            "cpu_wait",
            "stdlib_paths",
            "thread_limits",
            "wire",
            "transport",
            "rpc",
            "control",
            "logs",
        }
    ),
    # The host names the runner module (control.RUNNER_MODULE) but never imports it.
    "host": frozenset(
        {
            "errors",
            "arguments",
            "log_guard",
            "validation",
            "sizes",
            "cpu_wait",
            "stdlib_paths",
            "off_loop",
            "thread_limits",
            "zygote_sharing",
            "loop_closed",
            "wire",
            "transport",
            "rpc",
            "control",
            "logs",
            "exporters",
        }
    ),
    # OpenTelemetry export (``isoplug[otel]``): watches hosts through host.observers, reads
    # replayed records; the host never imports it.
    "otel": frozenset({"errors", "log_guard", "wire", "logs", "host"}),
    # Helpers for tests (plugin harness, records, pytest plugin, an OTLP receiver): a user of
    # the public API, so it imports from the bare package (and errors) only, the one
    # sanitizer (pure functions): it shows a folder's name as the host's problems do, and the
    # zygote sharing switch, which the pytest plugin turns on for the session's hosts, and
    # the host's registry's folder of plugins for one plugin's folder (as `isoplug run`
    # makes it).
    "testing": frozenset(
        {"errors", "arguments", "isoplug", "wire", "host", "zygote_sharing", "lazy_names"}
    ),
    # ``isoplug new``: writes a plugin's folder from templates; imports nothing of isoplug's
    # but the one sanitizer (pure functions), for the paths its errors quote.
    "scaffold": frozenset({"wire"}),
    # The foundation-stage demo behind ``isoplug demo``: a host and a runner in miniature.
    "_foundation_demo": _BELOW_CLI,
    "isoplug": _BELOW_CLI,
    # ``isoplug run --tui`` (``isoplug[tui]``): a Textual view of a running host.
    "tui": frozenset({"errors", "log_guard", "logs", "host"}),
    "cli": _BELOW_CLI | {"isoplug", "_foundation_demo", "otel", "scaffold", "tui"},
    # ``python -m isoplug``.
    "__main__": frozenset({"cli"}),
}

#: Standard modules that do I/O, keep time or run concurrently: the wire layer imports none.
IO_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "multiprocessing",
        "os",
        "select",
        "selectors",
        "signal",
        "socket",
        "ssl",
        "subprocess",
        "threading",
        "time",
    }
)

#: Modules that importing ``isoplug.wire`` must not load, directly or through a dependency.
NOT_LOADED_BY_WIRE = (
    "anyio",
    "asyncio",
    "concurrent.futures",
    "multiprocessing",
    "selectors",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "trio",
)

PACKAGE_DIR = Path(isoplug.__file__).parent


def module_name(path: Path) -> str:
    """The dotted name of the module in ``path`` (a file under the isoplug package)."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> str:
    """The layer a dotted isoplug module name belongs to (``"isoplug"`` for the bare package)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "isoplug"


def isoplug_modules() -> Iterator[Path]:
    """Every Python source file of the isoplug package."""
    yield from sorted(PACKAGE_DIR.rglob("*.py"))


def imports_in(source: str, module: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """``(line, absolute dotted name)`` of everything the source of ``module`` imports.

    Imports at any depth count (a function-local import is still a dependency). ``from
    package import name`` yields ``package.name`` as well as ``package``, so importing a
    submodule by name counts as importing it. Relative imports are resolved.
    """
    this = module.split(".")
    package = this if is_package else this[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module_from = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module_from = node.module or ""
            yield node.lineno, module_from
            for alias in node.names:
                yield node.lineno, f"{module_from}.{alias.name}"


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, absolute dotted name)`` of everything the isoplug module at ``path`` imports."""
    source = path.read_text(encoding="utf-8")
    return imports_in(source, module_name(path), is_package=path.name == "__init__.py")


def layers_imported(imports: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """``(line, layer)`` for every import of an isoplug module among ``imports``."""
    for line, name in imports:
        parts = name.split(".")
        if parts[0] != "isoplug":
            continue
        if len(parts) == 1 or parts[1] not in ALLOWED_IMPORTS:
            # The bare package, or ``from isoplug import name`` of something that is no layer.
            # (A module of an unlisted layer is caught by the test of known layers.)
            yield line, "isoplug"
        else:
            yield line, parts[1]


def test_every_module_belongs_to_a_known_layer() -> None:
    """Each module under src/isoplug sits in a layer listed in ALLOWED_IMPORTS."""
    unknown = {
        module_name(path)
        for path in isoplug_modules()
        if layer_of(module_name(path)) not in ALLOWED_IMPORTS
    }
    assert not unknown, f"add these to ALLOWED_IMPORTS in {__file__}: {sorted(unknown)}"


def test_layers_import_only_the_layers_below_them() -> None:
    """No module imports from a layer its own layer is not allowed to use."""
    violations = []
    for path in isoplug_modules():
        layer = layer_of(module_name(path))
        allowed = ALLOWED_IMPORTS.get(layer, frozenset()) | {layer, "errors"}
        for line, imported in layers_imported(imported_modules(path)):
            if imported not in allowed:
                relative = path.relative_to(PACKAGE_DIR.parent)
                violations.append(f"{relative}:{line}: {layer} imports from {imported}")
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_the_layering_table_itself_points_only_downwards() -> None:
    """The table has no cycles: no two layers may import each other, directly or indirectly."""

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for below in ALLOWED_IMPORTS[todo.pop()]:
                if below not in seen:
                    seen.add(below)
                    todo.append(below)
        return seen

    assert all(
        below in ALLOWED_IMPORTS for allowed in ALLOWED_IMPORTS.values() for below in allowed
    )
    cyclic = [layer for layer in ALLOWED_IMPORTS if layer in reachable(layer)]
    assert not cyclic, f"layers that can reach themselves: {cyclic}"


def test_the_explicit_layer_rules_hold() -> None:
    """wire and transport import no other layer (and not each other); rpc is below logs and up."""
    upper = {"rpc", "logs", "exporters", "runner", "host", "cli", "isoplug"}
    assert not ALLOWED_IMPORTS["wire"] & (upper | {"transport"})
    assert not ALLOWED_IMPORTS["transport"] & (upper | {"wire"})
    assert not ALLOWED_IMPORTS["rpc"] & {"logs", "exporters", "runner", "host", "cli", "isoplug"}


def test_the_import_scanner_sees_every_kind_of_import() -> None:
    """The scanner resolves absolute, relative, from-package and function-local imports."""
    source = (
        "import socket\n"
        "from isoplug import rpc\n"
        "from ..transport import stream\n"
        "from . import codec\n"
        "def later():\n"
        "    import isoplug.host.spawn\n"
    )
    imports = list(imports_in(source, "isoplug.wire.probe"))
    names = {name for _, name in imports}
    assert {"socket", "isoplug.rpc", "isoplug.transport.stream", "isoplug.wire.codec"} <= names
    assert "isoplug.host.spawn" in names
    layers = {layer for _, layer in layers_imported(iter(imports))}
    assert layers == {"rpc", "transport", "wire", "host", "isoplug"}


def test_wire_modules_import_no_io_clock_or_concurrency_module() -> None:
    """No module of isoplug.wire imports asyncio, socket, ssl, threading, time, os or the like."""
    offenders = [
        f"{path.name}:{line}: {name}"
        for path in sorted((PACKAGE_DIR / "wire").rglob("*.py"))
        for line, name in imported_modules(path)
        if name.split(".")[0] in IO_MODULES
    ]
    assert not offenders, f"isoplug.wire must stay sans-IO: {offenders}"


def test_importing_the_wire_layer_loads_no_io_or_concurrency_library() -> None:
    """A fresh interpreter importing isoplug.wire has not loaded asyncio, socket, ssl, threads."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import isoplug.wire\n"
        "print(json.dumps({'before': sorted(before), 'after': sorted(sys.modules)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules = json.loads(result.stdout)
    after = set(modules["after"])
    assert "isoplug.wire.connection" in after
    loaded = sorted(set(NOT_LOADED_BY_WIRE) & after)
    brought_in = sorted(set(loaded) - set(modules["before"]))
    assert not loaded, f"loaded: {loaded} (by isoplug.wire itself: {brought_in})"


def test_import_isoplug_leaves_the_host_to_the_first_use_of_host() -> None:
    """docs/host.md: ``import isoplug`` is quick; the host's modules come with the first
    ``isoplug.Host`` (``from isoplug import Host`` at an application's import time)."""
    code = (
        "import sys\n"
        "import isoplug\n"
        "print('isoplug.host.host' in sys.modules, 'asyncio' in sys.modules)\n"
        "from isoplug import Host\n"
        "print('isoplug.host.host' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "False", "True"], result.stdout
