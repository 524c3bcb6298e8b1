"""Calling a method of a plugin over its runner's control connection.

The runner answers a :data:`~isoplug.control.CALL` with a :class:`~isoplug.control.CallOutcome`;
this module turns a failed outcome into the matching :class:`~isoplug.errors.RemoteError`
subclass, and transport failures into one exception, which :func:`call_runner` then explains:
the runner was stopped or restarted on request, or how it died.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from isoplug.control import CALL, CallOutcome, CallRequest
from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    LocalProtocolError,
    PluginBusy,
    RequestCancelled,
    RequestTimeout,
    hidden_from_pytest,
)
from isoplug.host.commands import Commands
from isoplug.host.health import EXPLAIN_WAIT
from isoplug.host.life import RunnerLife
from isoplug.host.limits import LimitWatch
from isoplug.host.process import RunnerProcess
from isoplug.host.status import PluginUnavailable, Unavailability
from isoplug.rpc.peer import remote_error
from isoplug.wire.tracecontext import current_traceparent
from isoplug.wire.values import locate_unencodable, unencodable_error

__all__ = ["call_runner"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

#: The host's numbers for calls (unique in this process), by which the runner's health
#: reports name the worker threads running them.
_call_ids = itertools.count(1)

#: After a call lost its connection, how long to wait for the runner's exit status so that
#: the caller's error can say how it died; the kernel reports an exit within milliseconds.
_CRASH_ACCOUNT_WAIT = 1.0


async def call_runner(
    life: RunnerLife,
    plugin_id: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    remaining: float | None,
    commands: Commands,
    account_lost: Callable[[RunnerLife], Awaitable[None]] | None = None,
) -> Any:
    """Call ``plugin_id.method(*args, **kwargs)`` in the runner process of ``life`` over its
    control connection, answered within ``remaining`` seconds (None: no limit). The
    call is counted in flight on ``life`` while it lasts (a recycle waits for it).

    Raises :class:`~isoplug.errors.MethodNotFound`, :class:`~isoplug.errors.InvalidParams`,
    :class:`~isoplug.errors.RemoteError` (the method raised; with its traceback),
    :class:`~isoplug.errors.RequestTimeout` (a cancel is sent to the runner, whose health
    channel says what became of the call), :class:`~isoplug.errors.UnencodableValue` (an
    argument cannot be sent; nothing was). A lost connection is explained:
    :class:`~isoplug.host.status.PluginUnavailable` when ``commands`` holds a stop or restart
    (or tells of the host's close, or of a hot reload's replacement: see
    :meth:`~isoplug.host.commands.Commands.lost_call`), or when the host recycles the
    runner, else :class:`~isoplug.errors.ConnectionBroken` saying how the runner ended;
    either is raised after ``account_lost(life)`` (the supervision's account of the exit, so
    that what the caller reads next is no longer the lost runner). A call the runner
    cancelled because it was told to shut down (it cancels the calls it serves before its
    teardown hooks run) is the same :class:`~isoplug.host.status.PluginUnavailable`.
    """
    peer, process = life.peer, life.process
    try:
        if peer is None or process is None:
            raise PluginUnavailable(
                f"plugin {plugin_id!r} lost its runner just now",
                reason=Unavailability.RUNNER_LOST,
                plugin_id=plugin_id,
            )
        call_id = next(_call_ids)
        traceparent, tracestate = current_traceparent()
        request = CallRequest(
            plugin=plugin_id,
            method=method,
            kwargs=kwargs,
            args=args,
            call_id=call_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        # One coroutine for the whole call (it used to be three): every layer is paid on
        # every call. The innermost handlers turn the session's errors into the call's; the
        # middle ones explain those; the outermost lets the supervision account for a runner
        # that is gone before the caller hears of it.
        life.call_started()
        try:
            try:
                outcome = await peer.request(
                    CALL,
                    request,
                    timeout=remaining,
                    result_type=CallOutcome,
                    # What the runner answers to the cancel a timeout sends says what became
                    # of it.
                    late_answer=EXPLAIN_WAIT,
                )
            except LocalProtocolError as exc:
                # Found only once encoding failed: a call whose arguments encode pays nothing.
                error = unencodable_error(
                    f"cannot send the arguments of {plugin_id}.{method} to its runner",
                    exc,
                    _unencodable_argument(args, kwargs),
                )
                if error is None:
                    raise
                raise error from exc
            except RequestTimeout as exc:
                timeout = RequestTimeout(
                    f"plugin {plugin_id!r} did not answer {method!r} within {remaining:g} s"
                )
                timeout.late_answer = exc.late_answer
                raise timeout from None
            except ConnectionClosed as exc:
                # Whatever ended the session: the handlers below know better why.
                raise ConnectionBroken(str(exc)) from exc
            except PluginBusy as exc:
                # Refused by the runner's RPC layer, which knows the request, not the call:
                # named here as the caller wrote it, with the settings that bound it.
                raise PluginBusy(
                    f"{plugin_id}.{method}",
                    exc.remote_type,
                    f"the runner refused the call at once, at its limits of calls running and "
                    f"queued (SupervisorConfig.max_concurrent_calls, max_queued_calls): "
                    f"{exc.remote_message}",
                ) from None
            if outcome.error is not None:
                # The runner's texts, sanitized: they end up in the host's records and messages.
                raise remote_error(f"{plugin_id}.{method}", outcome.error)
            return outcome.result
        except RequestTimeout as exc:
            if remaining is None:
                raise
            # What became of the call (not started, cancelled, or a worker thread running on)
            # is the runner's to say: its answer to the cancel, and its health thread, which
            # answers even while its event loop is blocked.
            raise RequestTimeout(
                await life.health.explain_timeout(
                    plugin_id, method, call_id, remaining, exc.late_answer
                )
            ) from None
        except (ConnectionBroken, RequestCancelled) as exc:
            lost = commands.lost_call(plugin_id, method)
            if lost is not None:
                raise lost from exc
            recycled = life.recycling()
            if recycled is not None:
                # Stopped gracefully by the host, to be started again at once: no crash.
                raise PluginUnavailable(
                    f"plugin {plugin_id!r} was recycled during {method!r} ({recycled})",
                    reason=Unavailability.RECYCLED,
                    plugin_id=plugin_id,
                ) from exc
            if isinstance(exc, RequestCancelled):
                raise
            # Most likely the runner died mid-call: say how, if it is known within a moment.
            await process.wait_exit(_CRASH_ACCOUNT_WAIT)
            raise ConnectionBroken(
                f"plugin {plugin_id!r} crashed during {method!r}: its runner (pid "
                f"{process.pid}) {_how_it_ended(process, life.limits)}"
            ) from exc
        finally:
            life.call_ended()
    except (ConnectionBroken, PluginUnavailable):
        if account_lost is not None:
            await account_lost(life)
        raise


def _unencodable_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    named = [*((f"args[{i}]", value) for i, value in enumerate(args)), *kwargs.items()]
    return next(filter(None, (locate_unencodable(value, name) for name, value in named)), None)


def _how_it_ended(process: RunnerProcess, limits: LimitWatch | None) -> str:
    if not process.exited.done():
        return "lost its connection"
    returncode = process.exited.result()
    if not process.status_known:
        # Its zygote died first: nobody could learn how it ended (see isoplug.host.zygote).
        return "ended (how is unknown: the process that started it died first)"
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        signum = signal.Signals(-returncode)
    except ValueError:
        return f"was killed by signal {-returncode}"
    # The host's own reason, when it sent the signal (a limit passed, a hang): host text.
    why = process.host_signals.get(signum)
    if why:
        return f"was killed by {signum.name} from the host: {why}"
    if limits is not None:
        # A signal of the kernel's at a limit (cpu_seconds): the caller learns which.
        limit, note = limits.account(returncode, None, True, process.cpu_at_exit)
        if limit is not None:
            return f"was killed by {signum.name} at its limit {limit}: {note}"
    return f"was killed by {signum.name}"
