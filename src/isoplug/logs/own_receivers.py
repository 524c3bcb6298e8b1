"""The log receivers open in this process, and the senders that must not forward to them.

A :class:`~isoplug.logs.ForwardingHandler` whose records its own process's receiver replays
gets each of them back, forwards it again, and so on for ever: one record circulated ~160
times a second, with no word (found by an outside check). A plausible mistake makes it:
setup code that the parent and its workers share calls :func:`~isoplug.logs.forward_logs`
when ``ISOPLUG_LOG_ADDRESS`` is set, and the parent put ``receiver.child_env()`` into
``os.environ`` for its workers to inherit.

So :class:`~isoplug.logs.LogReceiver` notes itself here while it is open, and senders look:

- :func:`forward_logs` (which puts its handler on the root logger, where every replayed record
  arrives) raises :class:`~isoplug.errors.SelfForwarding` for an address and token that name
  a receiver open in this process (:func:`refuse_own_receiver`);
- a handler placed by other means connects first: once welcomed by a receiver of this process
  whose replayed records reach it (:func:`loops_back`), it stops, saying why on stderr. A
  handler that is not on their way (a test handing it records itself) may send to it.

A forked child is another process: what its parent noted here is not its own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

from isoplug.errors import SelfForwarding
from isoplug.transport import Address, Scheme

__all__ = ["OpenReceiver", "closed", "loops_back", "opened", "refuse_own_receiver"]


@dataclasses.dataclass(frozen=True, eq=False)
class OpenReceiver:
    """A receiver open in process ``pid``: where it listens, its token, its prefix."""

    pid: int
    address: Address
    token: str
    prefix: str


_open: list[OpenReceiver] = []
_lock = threading.Lock()


def opened(address: Address, token: str, prefix: str) -> OpenReceiver:
    """Note a receiver that listens now; give the result to :func:`closed` when it stops."""
    entry = OpenReceiver(os.getpid(), address, token, prefix)
    with _lock:
        _open.append(entry)
    return entry


def closed(entry: OpenReceiver) -> None:
    with _lock:
        if entry in _open:
            _open.remove(entry)


def _here(token: str) -> list[OpenReceiver]:
    pid = os.getpid()
    with _lock:
        return [entry for entry in _open if entry.pid == pid and entry.token == token]


def _same_place(listening: Address, given: Address) -> bool:
    """Whether ``given`` reaches a listener at ``listening``: a unix socket by its path; TCP
    by its port, whatever name the host is given by (``localhost``, ``127.0.0.1``, the
    wildcard the receiver bound)."""
    if listening.scheme is Scheme.UNIX or given.scheme is Scheme.UNIX:
        return listening.scheme is given.scheme and (
            os.path.abspath(listening.path) == os.path.abspath(given.path)
        )
    return listening.port == given.port


def refuse_own_receiver(address: Address, token: str, from_env: bool) -> None:
    """Raise :class:`~isoplug.errors.SelfForwarding` when ``address`` and ``token`` name a
    receiver open in this process (``from_env``: :func:`forward_logs` read them from the
    environment)."""
    if not any(_same_place(entry.address, address) for entry in _here(token)):
        return
    where = (
        "ISOPLUG_LOG_ADDRESS and ISOPLUG_LOG_TOKEN in this process's environment name"
        if from_env
        else "this address and token name"
    )
    fix = (
        "pass receiver.child_env() to the children's environment rather than this "
        "process's os.environ, or skip forward_logs() where the receiver runs"
        if from_env
        else "call forward_logs() in the processes that send (the receiver's children), "
        "not in the receiver's"
    )
    raise SelfForwarding(
        f"cannot forward logs: {where} the LogReceiver open in this very process "
        f"({address}): it would replay each record back into this process's logging, "
        f"where it is forwarded again, for ever; {fix}"
    )


def loops_back(handler: object, token: str, receiver_pid: int) -> str | None:
    """Why ``handler``, welcomed by the receiver of process ``receiver_pid`` (the welcome's
    word) with ``token``, must not forward: that receiver is open in this process and the
    records it replays reach ``handler``. None when it may forward."""
    if receiver_pid != os.getpid():
        return None
    for entry in _here(token):
        if _reaches(handler, entry.prefix):
            return (
                f"the LogReceiver at {entry.address} is open in this very process and the "
                "records it replays reach this handler: each would be forwarded again, for "
                "ever; forward from the processes that send (the receiver's children), or put "
                "this handler where replayed records do not reach it"
            )
    return None


def _reaches(handler: object, prefix: str) -> bool:
    """Whether records replayed under ``prefix`` can reach ``handler``."""
    if not prefix:
        # A record comes back under its own name: to the very logger that sent it, wherever
        # the handler is.
        # list(): another thread may make a logger meanwhile.
        loggers = [logging.getLogger(), *list(logging.Logger.manager.loggerDict.values())]
        return any(isinstance(x, logging.Logger) and handler in x.handlers for x in loggers)
    logger: logging.Logger | None = logging.getLogger(prefix)
    while logger is not None:
        if handler in logger.handlers:
            return True
        logger = logger.parent if logger.propagate else None
    return False
