"""Starting one runner process: its command line, environment and bootstrap line.

The tokens travel in the bootstrap on stdin, never in argv or the environment, where other
local users (``ps``, ``/proc/<pid>/environ`` of a core dump) could read them.
"""

from __future__ import annotations

import errno
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence

import msgspec

from isoplug.control import RUNNER_MODULE, Bootstrap, PluginEntry, pack_config, path_text
from isoplug.host.descendants import TAG_LENGTH, TAG_VARIABLE
from isoplug.host.environment import runner_environment
from isoplug.host.manifest import Manifest
from isoplug.host.process import PRINTING_PIPE_BYTES, OpenStdio, RunnerProcess
from isoplug.host.registry import runner_limits
from isoplug.host.zygote import Zygote
from isoplug.wire.sanitize import clean_text

__all__ = ["CannotLaunch", "launch_runner", "plugin_entry", "runner_python", "start_method"]


async def launch_runner(
    runner_id: str,
    manifests: Sequence[Manifest],
    *,
    address: str,
    log_address: str,
    token: str,
    log_token: str,
    teardown_timeout: float,
    open_stdio: OpenStdio,
    spawned: Callable[[RunnerProcess], None] | None = None,
    health_fd: int = -1,
    health_tick: float = 0.1,
    max_stuck_threads: int = 3,
    nice: int = 0,
    zygote: Zygote | None = None,
    inherit_environment: Sequence[str] | bool = (),
    flow: tuple[int, int, int, int] = (256, 1024, 1024, 64 * 2**20),
) -> RunnerProcess:
    """Start ``python -m isoplug.runner`` for ``manifests`` (each with the log level its plugin
    runs at: see :mod:`isoplug.host.levels`) and hand it its bootstrap;
    ``spawned`` is told of the process before the runner can read it, ``open_stdio(pid)`` says
    where its stdout/stderr output goes (see RunnerProcess.start). ``health_fd`` is the
    runner's end of its health channel, which it inherits (see isoplug.host.health_link).
    With a ``zygote``, the runner is forked from it unless a manifest asks for a spawn
    (:func:`start_method`).
    ``inherit_environment`` is the host's part of what the runner gets of its environment
    (see :mod:`isoplug.host.environment`). ``flow``: the runner's ``max_concurrent_calls``,
    ``max_queued_calls``, ``max_queued_events`` and ``max_queued_event_bytes`` (see
    SupervisorConfig).

    Raises :class:`OSError` when the process cannot be started; :class:`CannotLaunch` when no
    retry can start it.
    """
    working_directory = _working_directory()
    # A group never pipes (see Manifest.stdio): its members' lines are told apart in the runner.
    stdio = "pipe" if len(manifests) == 1 and manifests[0].stdio == "pipe" else "records"
    bootstrap = Bootstrap(
        address=path_text(address),
        log_address=path_text(log_address),
        token=token,
        log_token=log_token,
        runner_id=runner_id,
        plugins=tuple(plugin_entry(m) for m in manifests),
        # One handler per process: the members of a group agree on it (see plan_runners).
        log_write_through_rate=next(
            (m.log_write_through_rate for m in manifests if m.log_write_through_rate is not None),
            None,
        ),
        teardown_timeout=teardown_timeout,
        health_fd=health_fd,
        health_tick=health_tick,
        max_stuck_threads=max_stuck_threads,
        nice=nice,
        limits=runner_limits(manifests),
        max_concurrent_calls=flow[0],
        max_queued_calls=flow[1],
        max_queued_events=flow[2],
        max_queued_event_bytes=flow[3],
        stdio=stdio,
        address_bytes=os.fsencode(address),
        log_address_bytes=os.fsencode(log_address),
    )
    env = runner_environment(manifests, inherit_environment)
    # Names this runner process's descendants for good (see isoplug.host.descendants). Not a
    # secret: a process that copies it only makes itself one of them.
    tag = env[TAG_VARIABLE] = secrets.token_hex(TAG_LENGTH // 2)
    try:
        return await RunnerProcess.start(
            [runner_python(manifests), "-m", RUNNER_MODULE],
            env=env,
            stdin_line=msgspec.json.encode(bootstrap) + b"\n",
            open_stdio=open_stdio,
            spawned=spawned,
            pass_fds=(health_fd,) if health_fd >= 0 else (),
            tag=tag,
            zygote=zygote if _forkable(manifests, env, working_directory) else None,
            # A print() then writes to the pipe itself: room for bursts while the reader is paused.
            pipe_bytes=PRINTING_PIPE_BYTES if stdio == "pipe" else None,
        )
    except OSError as exc:
        if exc.errno != errno.E2BIG:
            raise
        # The kernel's limits on one variable (128 KiB) and on all of them: every start
        # would fail the same way.
        largest = max(env, key=lambda name: len(name) + len(env[name]))
        raise CannotLaunch(
            f"its environment is too large for the kernel to start it ({exc.strerror}): "
            f"{len(env)} variables, the largest {clean_text(largest, 100)!r} "
            f"({len(env[largest]):,} characters); let fewer or smaller ones through "
            "(inherit_environment, [environment])"
        ) from None


class CannotLaunch(OSError):
    """No runner can be started here, however often it is tried: ``str()`` says why and
    what to do."""


def _working_directory() -> str:
    """The host's working directory, where a runner starts. Raises :class:`CannotLaunch` when
    it was deleted: a process cannot go back into a deleted folder (one made again under its
    name is another folder), and a runner started in it dies before it reads a line."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise CannotLaunch(
            "the host's working directory is gone (deleted), and a runner starts in it: "
            "start the host in a folder that exists, or os.chdir() to one, then restart the plugin"
        ) from None


def _forkable(manifests: Sequence[Manifest], env: Mapping[str, str], cwd: str) -> bool:
    """Whether the runner of ``manifests`` may be forked by the zygote: as they ask
    (:func:`start_method`), and when its fork order can carry ``env`` and the working
    directory ``cwd``. The order is msgpack, whose text is UTF-8: a variable or folder name
    holding bytes that are not (lone surrogates in Python) is passed by a spawn instead,
    which hands them to the kernel as the bytes they are."""
    if start_method(manifests) != "fork":
        return False
    try:
        for text in (cwd, *env.keys(), *env.values()):
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def start_method(manifests: Sequence[Manifest]) -> str:
    """``"spawn"`` when a manifest asks for it (``start = "spawn"``), names an interpreter of
    its own (``python``: the zygote is the host's), or sets a variable the interpreter reads
    only at its start (``PYTHON*``: a forked runner starts from the zygote's interpreter, set up
    before that variable existed); else ``"fork"``. The zygote spawns a runner too when such a
    variable reaches it some other way (``inherit_environment``, the host's environment since
    the zygote started) with another value than the zygote's, and when its locale or another
    variable a process reads only at its start (``LD_LIBRARY_PATH``, ``MALLOC_ARENA_MAX``...)
    differs (:func:`isoplug.host.fork_order.startup_differences`)."""
    for manifest in manifests:
        if (
            manifest.start == "spawn"
            or manifest.python is not None
            or any(n.startswith("PYTHON") for n in manifest.environment)
        ):
            return "spawn"
    return "fork"


def plugin_entry(manifest: Manifest) -> PluginEntry:
    """What a runner is told of ``manifest``'s plugin."""
    return PluginEntry(
        id=manifest.id,
        path=path_text(manifest.directory),
        entry=manifest.entry,
        log_level=manifest.log_level,
        capabilities=manifest.capabilities,
        packed_config=pack_config(manifest.config),
        sys_path=tuple(path_text(path) for path in manifest.sys_path),
        path_bytes=os.fsencode(manifest.directory),
        sys_path_bytes=tuple(os.fsencode(path) for path in manifest.sys_path),
    )


def runner_python(manifests: Sequence[Manifest]) -> str:
    """The interpreter of the runner of ``manifests``: the one they name (a group's plugins
    agree on it), else the host's own."""
    named = next((m.python for m in manifests if m.python is not None), None)
    return str(named) if named is not None else sys.executable
