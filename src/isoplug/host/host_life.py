"""What a :class:`~isoplug.Host` opens when it starts and closes when it stops, in order.

Starting: the control listener (unix socket, on the loop) whose routes admit each runner by
its token and the kernel's word on its pid, then the log bridge's listener (threads). Stopping
runs the other way round: every runner first (each supervisor's own stop, in parallel), then
what served them: the zygote (nothing left to fork), the control listener, the log bridge
(once what the runners sent last is replayed), the routes and capabilities. A stop that is
cancelled kills every runner at once and still closes the rest; cancelled (again) while it
closes one of these, it closes that one and those after it without waiting.

Apart from :mod:`isoplug.host.host` so that the Host's module keeps to its public surface;
these functions take what they open and close, not the Host.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence

from isoplug.host.config import SupervisorConfig
from isoplug.host.logbridge import LogBridge
from isoplug.host.routes import ConnectionRoutes
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.host.zygote import Zygote
from isoplug.log_guard import guarded_logger
from isoplug.off_loop import off_loop
from isoplug.rpc import serve
from isoplug.transport import Listener
from isoplug.transport.socket_dirs import remove_stale_socket_dirs

__all__ = ["cancelled_why", "open_listeners", "stop_everything"]

_log = guarded_logger("isoplug.host")

#: Why runners are killed at once after a KeyboardInterrupt: under asyncio.run, the first
#: Ctrl-C cancels the application's task, and the second raises it.
INTERRUPTED = "KeyboardInterrupt (Ctrl-C again)"
#: How long a cancelled shutdown waits for each killed runner's exit to be accounted for.
KILLED_EXIT_WAIT = 3.0


async def open_listeners(
    config: SupervisorConfig, routes: ConnectionRoutes, log_bridge: LogBridge
) -> Listener:
    """Open the runners' control listener and the log bridge's; return the former."""
    # A host killed by SIGKILL could not remove its sockets' directories: ours to do.
    stale = await off_loop(remove_stale_socket_dirs)
    if stale:
        _log.info("removed %d socket folders of dead isoplug processes", len(stale))
    listener = await serve(
        "unix:",
        routes.expected_token,
        routes.serve,
        handlers=routes.handlers_for,
        name="isoplug-host",
        admit=routes.admit,
        kinship=routes.family_of,
        handshake_timeout=config.handshake_timeout,
        max_handshakes=config.max_handshakes,
    )
    try:
        log_bridge.open(
            config.handshake_timeout,
            config.max_handshakes,
            config.max_log_connections,
            config.max_waiting_log_connections,
            config.max_waiting_log_connections_in_all,
            max_log_rings=config.max_log_rings,
        )
    except BaseException:
        # Not the host's yet: its aclose() would not close it, and its socket leaked
        # (a ResourceWarning for an unclosed socket when collected).
        await listener.aclose()
        raise
    return listener


def cancelled_why(exc: asyncio.CancelledError | KeyboardInterrupt) -> str:
    """Why the runners are killed at once: their host's shutdown was cancelled (``exc``)."""
    # The canceller may say why (the command line's second Ctrl-C does); asyncio.run's
    # second Ctrl-C raises wherever the loop was, in a shutdown too.
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if exc.args and isinstance(exc.args[0], str):
        return f"the host's shutdown was cancelled ({exc.args[0]})"
    return "the host's shutdown was cancelled"


async def stop_everything(
    supervisors: Sequence[RunnerSupervisor],
    *,
    zygote: Zygote | None,
    listener: Listener | None,
    log_bridge: LogBridge,
    then_close: Sequence[Callable[[], None]],
    kill_first: str | None = None,
) -> None:
    """Stop every runner, then close what served them (see the module docstring); cancelled,
    kill the runners at once, close the rest, and raise. ``kill_first``: why every runner is
    killed at once from the start."""
    if zygote is not None:
        # Its death from here on ends runners the host is stopping: not an ERROR to restart.
        zygote.host_stopping()
    stopping = asyncio.ensure_future(
        asyncio.gather(*(s.aclose(host_closing=True) for s in supervisors), return_exceptions=True)
    )
    try:
        if kill_first is not None:
            # Once each stop is asked (their first step): the exits are stops, not crashes.
            await asyncio.sleep(0)
            for supervisor in supervisors:
                supervisor.kill_now(kill_first)
        await asyncio.shield(stopping)
    except (asyncio.CancelledError, KeyboardInterrupt) as exc:
        why = cancelled_why(exc)
        for supervisor in supervisors:
            supervisor.kill_now(why)
        # Bounded: a runner whose exit cannot be seen (its zygote stopped) must not hold a
        # cancelled close forever; the zygote's close below ends it.
        stopped, _ = await asyncio.wait({stopping}, timeout=KILLED_EXIT_WAIT)
        if stopped:
            # Each supervision says how its runner ended once it sees the exit, which the
            # zygote reports for a forked runner: before the zygote is closed below.
            await asyncio.gather(*(s.wait_ended(KILLED_EXIT_WAIT) for s in supervisors))
        raise
    finally:
        try:
            await _close_in_order(_closing_steps(zygote, listener, log_bridge))
        finally:
            for close in then_close:
                close()


#: One thing to close: awaiting its close, and closing it without waiting.
_Step = tuple[Callable[[], Awaitable[None]], Callable[[], None]]


def _closing_steps(
    zygote: Zygote | None, listener: Listener | None, log_bridge: LogBridge
) -> list[_Step]:
    steps: list[_Step] = []
    if zygote is not None:
        # The runners have stopped (or were killed): nothing more to fork.
        steps.append((zygote.aclose, zygote.close_now))
    if listener is not None:
        steps.append((listener.aclose, listener.close_now))
    # The runners have stopped: their log connections end as soon as what they sent last is
    # replayed (a thread of the bridge's replays it; waiting for it here must not block the
    # loop).
    steps.append((functools.partial(off_loop, log_bridge.close), log_bridge.close_now))
    return steps


async def _close_in_order(steps: Sequence[_Step]) -> None:
    """Await each close in turn. One that raises (cancelled: a second Ctrl-C, a supervisor's
    timeout, while the host closes) is closed without waiting, and so is each one after it,
    before the exception goes on: a cancelled close leaves nothing open."""
    for at, (close, _) in enumerate(steps):
        try:
            await close()
        except BaseException:
            for _, close_now in steps[at:]:
                close_now()
            raise
