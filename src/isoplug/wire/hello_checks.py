"""The handshake's verdicts: whether a listener welcomes a hello, and what a client's refusal is.

:class:`~isoplug.wire.connection.Connection` asks here and applies the answer (queues the
reject or the welcome, moves its state). Separate from it because these are decisions on one
message each, with the words a refused side reads, while the connection is about the order of
messages and its state: the checks can be read, and changed, without the state machine.
Free of I/O, like the whole wire layer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from isoplug.errors import AuthenticationFailed, HandshakeError, HandshakeTimeout, VersionMismatch
from isoplug.wire.messages import Hello, Reject, RejectCode
from isoplug.wire.sanitize import clean_quoted, clean_text
from isoplug.wire.versions import library_version, refused_by_listener, refused_client

__all__ = ["Admission", "HelloRefusal", "TokenLookup", "judge_hello", "refusal_error"]

#: A server-side token source that depends on who connects: given the client's hello, return
#: the token expected from it, or ``None`` when nobody by that name may connect.
TokenLookup = Callable[[Hello], str | None]

#: A server-side check after the token matched (the I/O layer binds what it knows of the
#: peer, such as the kernel's word on its pid): given the hello, return why the peer is
#: refused, or ``None`` to welcome it.
Admission = Callable[[Hello], str | None]

_HANDSHAKE_ERRORS: dict[str, type[HandshakeError]] = {
    RejectCode.AUTHENTICATION: AuthenticationFailed,
    RejectCode.VERSION: VersionMismatch,
    RejectCode.TIMEOUT: HandshakeTimeout,
}


@dataclass(frozen=True)
class HelloRefusal:
    """A hello the listener refuses: what it raises, and the reject that tells the client."""

    error: HandshakeError
    #: The peer hears only what it needs to fix its side; details stay in ``error``.
    reject: Reject


def judge_hello(
    hello: Hello,
    token: str | TokenLookup,
    admit: Admission | None,
    min_version: int,
    max_version: int,
) -> int | HelloRefusal:
    """The protocol version a listener speaking ``min_version..max_version`` opens the session
    with, or why it refuses ``hello``: an unknown client, a wrong token, ``admit``'s refusal,
    no common version (checked in that order)."""
    expected = token if isinstance(token, str) else token(hello)
    if expected is None:
        return _refused(
            AuthenticationFailed,
            f"runner {clean_quoted(hello.name, 200)} is not expected: no start of it awaits "
            "a connection (a runner whose start the host gave up on, at its ready_timeout, "
            "connecting late; or a process that is no runner of this host)",
            "unknown runner",
        )
    # Constant time whatever the lookup returned: the comparison leaks nothing of the token.
    if not hmac.compare_digest(hello.token.encode(), expected.encode()):
        return _refused(
            AuthenticationFailed,
            # The name is the client's to choose: said as its claim, never as who it is.
            f"wrong session token (the client says it is {clean_quoted(hello.name, 200)})"
            if hello.name
            else "wrong session token",
            "wrong session token",
        )
    refusal = None if admit is None else admit(hello)
    if refusal is not None:
        return _refused(AuthenticationFailed, refusal, "refused by the listener")
    low = max(hello.min_version, min_version)
    high = min(hello.max_version, max_version)
    if low > high:
        mismatch = refused_client(hello, min_version, max_version)
        reject = Reject(
            code=RejectCode.VERSION,
            reason=str(mismatch),
            min_version=min_version,
            max_version=max_version,
            library_version=library_version(),
        )
        return HelloRefusal(mismatch, reject)
    return high


def refusal_error(
    reject: Reject, min_version: int, max_version: int, *, max_reason: int
) -> HandshakeError:
    """What a client speaking ``min_version..max_version`` raises for the listener's
    ``reject``: its reason (sanitized, at most ``max_reason`` characters) in the error its code
    names."""
    if reject.code == RejectCode.VERSION:
        # Worded from this side: the listener's reason speaks from its own.
        return refused_by_listener(reject, min_version, max_version)
    reason = clean_text(reject.reason, max_reason)
    return _HANDSHAKE_ERRORS.get(reject.code, HandshakeError)(reason)


def _refused(error: type[HandshakeError], reason: str, told_peer: str) -> HelloRefusal:
    return HelloRefusal(error(reason), Reject(code=RejectCode.AUTHENTICATION, reason=told_peer))
