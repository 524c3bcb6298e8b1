"""The sending end of standalone log forwarding: one call in each child process."""

from __future__ import annotations

import logging
import os
import ssl

from isoplug.errors import AddressError, AuthenticationFailed, IsoplugError, VersionMismatch
from isoplug.logs.first_record import receiver_level
from isoplug.logs.handler import WRITE_THROUGH_RATE, ForwardingHandler
from isoplug.logs.loguru_bridge import forward_loguru
from isoplug.logs.own_receivers import refuse_own_receiver
from isoplug.logs.receiver import ADDRESS_ENV, NAME_ENV, TOKEN_ENV
from isoplug.transport import Address, parse_connect_address

__all__ = ["LEVEL_ENV", "forward_logs"]

#: The level for :func:`forward_logs` to give a root logger nobody configured (a number or a
#: name), set by ``PluginContext.log_child_env()``: the plugin's level.
LEVEL_ENV = "ISOPLUG_LOG_LEVEL"


def forward_logs(
    address: str | os.PathLike[str] | None = None,
    token: str | None = None,
    *,
    level: int | None = None,
    name: str | None = None,
    replace_handlers: bool = True,
    block_when_full: bool = False,
    write_through_rate: float = WRITE_THROUGH_RATE,
    ssl_context: ssl.SSLContext | None = None,
    loguru: bool = True,
) -> ForwardingHandler:
    """Send every log record of this process to a :class:`~isoplug.logs.LogReceiver`.

    With no arguments, the address and token come from the environment variables that
    ``receiver.child_env()`` provides, so this function works as a ``ProcessPoolExecutor`` or
    ``multiprocessing.Pool`` initializer as is (or pass ``initargs=(address, token)``); the
    sender's ``name`` too, when ``ISOPLUG_LOG_NAME`` is set (a plugin's child process, see
    ``PluginContext.log_child_env()``).

    The handler goes on the root logger. ``replace_handlers`` (default) removes the root
    logger's other handlers first, so that a forked child does not also print what it
    forwards; a previous forwarding handler is always replaced. ``level`` sets the root logger's
    level. Without it, a process whose logging nobody configured (the root logger at Python's
    default WARNING, with no handler: a child started by ``spawn`` or ``forkserver``) takes the
    level of ``ISOPLUG_LOG_LEVEL`` (:data:`LEVEL_ENV`, as a plugin's ``log_child_env()`` sets
    it), else the level from which the receiver's side handles records, as the receiver says
    when it connects: its ``log.info()`` then arrives wherever the
    receiving process would show it. A configured process (a forked child inherits its
    parent's logging) keeps its levels.

    ``ssl_context`` is the client context for a ``tls://`` receiver (one that trusts its
    certificate: a private CA's, say). ``block_when_full`` makes a full queue wait instead of
    dropping (lossless mode);
    ``write_through_rate`` trades CPU against what a crash can take (see
    :class:`~isoplug.logs.ForwardingHandler`). ``loguru`` (default) forwards loguru's messages
    too, as records of their own, if the program uses loguru (imported before or after this
    call; isoplug never imports it): see :func:`~isoplug.logs.forward_loguru`, which this
    calls, removing loguru's default stderr sink where ``replace_handlers`` removes the root
    logger's handlers. The connection is opened before returning; raises
    :class:`~isoplug.errors.IsoplugError` when the address or token is missing or the receiver
    refuses us (wrong token, nothing listening; :class:`~isoplug.errors.VersionMismatch`, one,
    when it shares no protocol version with us, its cause the handshake's), and at once,
    before connecting:
    :class:`~isoplug.errors.AddressError` for an address that is none, or that no connection
    could use (whitespace around it, a socket path too long: see
    :func:`~isoplug.transport.parse_connect_address`; saying so when it came from the
    environment), :class:`~isoplug.errors.SelfForwarding` for a receiver open in this
    very process (its replayed records would come back here and be sent again, for ever).
    """
    from_env = not address
    given = address or os.environ.get(ADDRESS_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    if not given or not token:
        raise IsoplugError(
            f"forward_logs() needs an address and a token: pass them, or set {ADDRESS_ENV} and "
            f"{TOKEN_ENV} (LogReceiver.child_env() gives both)"
        )
    parsed = _parsed(given, from_env)
    # A socket's path (a pathlib.Path) is said as the address it is, as the handler says it.
    address = given if isinstance(given, str) else str(parsed)
    refuse_own_receiver(parsed, token, from_env)
    root = logging.getLogger()
    unconfigured = root.level == logging.WARNING and not root.handlers
    told = _level_from_env() if level is None and unconfigured else None
    handler = ForwardingHandler(
        address,
        token,
        # Left empty for the default: the handler then names a forked child by its own pid.
        name=name or os.environ.get(NAME_ENV, ""),
        block_when_full=block_when_full,
        write_through_rate=write_through_rate,
        ssl_context=ssl_context,
    )
    handler.say_failures = False  # raised below, not said
    if not handler.start():
        reason = handler.failure or "no connection within the timeout"
        handler.close(timeout=0)
        hint = _name_hint(name, handler.failure_cause)
        said = (
            f"cannot forward logs: {reason}{hint}"
            if reason.startswith(f"cannot connect to {address}")
            else f"cannot forward logs to {address}: {reason}{hint}"
        )
        cause = handler.failure_cause
        if isinstance(cause, VersionMismatch):
            # Its own type, so that a caller can tell it (an IsoplugError, as raised before).
            raise VersionMismatch(said) from cause
        raise IsoplugError(said)
    handler.say_failures = True
    for existing in list(root.handlers):
        if replace_handlers or isinstance(existing, ForwardingHandler):
            root.removeHandler(existing)
            if isinstance(existing, ForwardingHandler):
                existing.close(timeout=1.0)
    root.addHandler(handler)
    if loguru:
        forward_loguru(keep_default_sink=not replace_handlers)
    if level is None and unconfigured:
        level = told if told is not None else receiver_level(handler)
    if level is not None:
        root.setLevel(level)
    return handler


def _parsed(address: str | os.PathLike[str], from_env: bool) -> Address:
    """``address`` parsed, before anything tries to connect to it: a malformed one was
    tried 9 times, for 6 s, before it was said not to be an address."""
    try:
        return parse_connect_address(address)
    except AddressError as exc:
        if not from_env:
            raise
        raise AddressError(
            f"cannot forward logs: {ADDRESS_ENV} in this process's environment holds no log "
            f"receiver's address: {exc} (LogReceiver.child_env() gives the address)"
        ) from None


def _name_hint(name: str | None, cause: BaseException | None) -> str:
    """What to change, when a plugin's child process that gave a name of its own was refused:
    the host knows a plugin's log connections by its runner's name, which
    ``ISOPLUG_LOG_NAME`` holds there."""
    told = os.environ.get(NAME_ENV, "")
    if not name or not told or name == told or not isinstance(cause, AuthenticationFailed):
        return ""
    return (
        f" (this process was given {NAME_ENV}={told!r}: a plugin's child process forwards "
        f"under its runner's name; call forward_logs() without name=)"
    )


def _level_from_env() -> int | None:
    """:data:`LEVEL_ENV`'s level, if set; raises :class:`~isoplug.errors.IsoplugError` for one
    that names no level."""
    text = os.environ.get(LEVEL_ENV, "").strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    level = logging.getLevelNamesMapping().get(text.upper())
    if level is None:
        raise IsoplugError(
            f"{LEVEL_ENV}={text[:40]!r} names no logging level: give a number or one of "
            f"{', '.join(logging.getLevelNamesMapping())}"
        )
    return level
