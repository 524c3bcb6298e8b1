"""Watching hosts from outside the host package: which hosts are running, their state changes
and the duration of every call, for exporters (:mod:`isoplug.otel`).

The host calls :func:`host_started`, :func:`host_closed`, :func:`state_changed` and
:func:`call_finished`; with no observer added (the usual case) each costs one test of an
empty tuple. Observers run in the thread that made the event (the host's event loop), so they
must be quick and must not block: an exporter keeps counters there and does its work at
collection time, in its own thread. An observer that raises is logged once per kind of
event and otherwise ignored: watching a host never breaks it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, TypeVar

from isoplug.errors import hidden_from_pytest
from isoplug.host.status import ExitAccount, StateChange
from isoplug.log_guard import guarded_logger

if TYPE_CHECKING:
    from isoplug.host.host import Host

__all__ = [
    "HostObserver",
    "add_observer",
    "call_finished",
    "host_closed",
    "host_started",
    "known_hosts",
    "live_hosts",
    "observed_call",
    "plugin_versions",
    "remove_observer",
    "state_changed",
]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

_log = guarded_logger("isoplug.host")
_T = TypeVar("_T")


class HostObserver(Protocol):
    """What an observer is told. Every method runs on the host's event loop."""

    def state_changed(self, host: Host, change: StateChange, exit: ExitAccount | None) -> None:
        """A plugin changed state; ``exit`` is the account of the runner process that ended
        just before, when this change follows an exit (None otherwise)."""

    def call_finished(
        self, plugin_id: str, method: str, seconds: float, error: BaseException | None
    ) -> None:
        """A call of ``plugin_id.method`` ended after ``seconds``, raising ``error``."""


class _Registry:
    #: Read without the lock on every event: replaced whole, never changed in place.
    observers: tuple[HostObserver, ...] = ()


_lock = threading.Lock()
_registry = _Registry()
_hosts: weakref.WeakSet[Host] = weakref.WeakSet()
#: Every host started, closed or not, while the application keeps it: records and counts of
#: a host that just closed are still exported after it closed.
_known: weakref.WeakSet[Host] = weakref.WeakSet()
#: The last exit each runner's observers were told about, per host (an exit is told once).
_told_exits: weakref.WeakKeyDictionary[Host, dict[str, ExitAccount]] = weakref.WeakKeyDictionary()
_failed_kinds: set[str] = set()


def add_observer(observer: HostObserver) -> None:
    with _lock:
        _registry.observers = (*_registry.observers, observer)


def remove_observer(observer: HostObserver) -> None:
    with _lock:
        _registry.observers = tuple(o for o in _registry.observers if o is not observer)


def live_hosts() -> list[Host]:
    """The hosts of this process that started and have not closed yet."""
    with _lock:
        return list(_hosts)


def known_hosts() -> list[Host]:
    """The hosts of this process that started, closed or not (while something holds them)."""
    with _lock:
        return list(_known)


def host_started(host: Host) -> None:
    with _lock:
        _hosts.add(host)
        _known.add(host)


def host_closed(host: Host) -> None:
    with _lock:
        _hosts.discard(host)


def plugin_versions(host: Host) -> dict[str, str]:
    """Every plugin of ``host`` and the version its manifest gives."""
    return {
        plugin_id: supervisor.manifests[plugin_id].version
        for plugin_id, supervisor in list(host._runner_of.items())
    }


def state_changed(host: Host, change: StateChange) -> None:
    observers = _registry.observers
    if not observers:
        return
    supervisor = host._supervisors.get(change.runner_id)
    exit = supervisor.last_exit if supervisor is not None else None
    if exit is not None:
        told = _told_exits.setdefault(host, {})
        if told.get(change.runner_id) is exit:
            exit = None
        else:
            told[change.runner_id] = exit
    for observer in observers:
        try:
            observer.state_changed(host, change, exit)
        except Exception:
            _failed("state_changed")


def call_finished(plugin_id: str, method: str, seconds: float, error: BaseException | None) -> None:
    for observer in _registry.observers:
        try:
            observer.call_finished(plugin_id, method, seconds, error)
        except Exception:
            _failed("call_finished")


async def observed_call(plugin_id: str, method: str, call: Awaitable[_T]) -> _T:
    """Await ``call`` (a call of ``plugin_id.method``); tell the observers how long it took
    and how it ended. Used only while an observer is added."""
    started = time.perf_counter()
    try:
        result = await call
    except BaseException as error:
        call_finished(plugin_id, method, time.perf_counter() - started, error)
        raise
    call_finished(plugin_id, method, time.perf_counter() - started, None)
    return result


def watching() -> bool:
    """Whether any observer is added (callers skip their bookkeeping when not)."""
    return bool(_registry.observers)


def _failed(kind: str) -> None:
    if kind in _failed_kinds:
        return
    _failed_kinds.add(kind)
    _log.exception("an observer of the host failed on %s; later failures are not logged", kind)
