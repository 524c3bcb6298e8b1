"""TLS on a log sender's side: settings that cannot work refused when given, and failures to
connect told in words that name the likely fix.

- :func:`check_sender_tls`: an ``ssl_context`` with a ``tcp://`` or ``unix:`` address would be
  ignored (the records and the token would cross in plain text, with the caller believing
  otherwise), and a server's context cannot connect at all: both raise ``ValueError`` when
  the sender is made;
- :func:`permanent_tls_failure`: a failure no later attempt can mend (the receiver's
  certificate not trusted, expired, for another name; the receiver refusing this sender's
  client certificate, or its lack of one) ends forwarding at once, as a wrong token does,
  rather than after every reconnection attempt: a configuration error, while the sender has
  never been welcomed at that address (after that, :func:`failed_verification` says what
  failed, and the sender retries: see :mod:`isoplug.logs.reconnect`);
- :func:`described`: a failure whose likely cause is a scheme the receiver does not speak
  (TLS to a plain-text listener, plain text to a TLS one) says so, as a question: the same
  errors have other causes too; an answer that is not isoplug's protocol is said to be one.
"""

from __future__ import annotations

import ssl

from isoplug.errors import ConnectionBroken, RemoteProtocolError
from isoplug.transport import Address, Scheme

__all__ = ["check_sender_tls", "described", "failed_verification", "permanent_tls_failure"]

#: OpenSSL's verify codes (X509_V_ERR_*) for a certificate outside its validity period.
_EXPIRED, _NOT_YET_VALID = 10, 9
#: ... and for one made out to other names than the one connected by.
_NAME_MISMATCHES = (62, 64)  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
#: TLS alerts by which a receiver refused this sender's certificate.
_CERTIFICATE_REFUSED = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    }
)
#: ... and by which it said that it requires one (TLS 1.3; 1.2 says HANDSHAKE_FAILURE,
#: which other mismatches send too).
_CERTIFICATE_REQUIRED = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
#: How a connection's error ends when the peer closed it before answering the hello.
_CLOSED_IN_HANDSHAKE = "peer closed the connection during the handshake"
_TRUST_FIX = (
    "give the sender an ssl_context that trusts the receiver's CA "
    "(ssl.create_default_context(cafile=...), or isoplug.transport.tls_client_context(cafile))"
)


def check_sender_tls(address: Address, ssl_context: ssl.SSLContext | None) -> None:
    """Raise ``ValueError`` for an ``ssl_context`` that could not be used as given."""
    if ssl_context is None:
        return
    if address.scheme is not Scheme.TLS:
        plain = "tcp://" if address.scheme is Scheme.TCP else "unix:"
        raise ValueError(
            f"{address}: an ssl_context was given, but a {plain} address sends in plain text "
            f"(the token and every record readable on the way): use a tls:// address "
            f"(tls://host:port, to a receiver listening on tls://), or pass no ssl_context"
        )
    if ssl_context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ValueError(
            "ssl_context is a server's context (ssl.Purpose.CLIENT_AUTH, "
            "PROTOCOL_TLS_SERVER), which cannot connect: give a sender a client context, "
            "ssl.create_default_context(cafile=<the receiver's CA>) or "
            "isoplug.transport.tls_client_context(cafile)"
        )


def permanent_tls_failure(error: BaseException) -> str | None:
    """Why ``error`` (a failed attempt to connect) will fail every attempt alike, naming the
    fix; None when it may not (a timeout, a refused or reset connection)."""
    cause = _verification_failure(error)
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _not_verified(cause)
    if cause.reason == _CERTIFICATE_REQUIRED:
        return (
            f"the receiver requires a client certificate, and this sender's ssl_context "
            f"has none ({_reason(cause)}): load one into it (context.load_cert_chain("
            f"certfile, keyfile), or tls_client_context(cafile, certfile=..., keyfile=...))"
        )
    return (
        f"the receiver refused this sender's client certificate ({_reason(cause)}): "
        f"give the sender a current certificate from a CA the receiver trusts"
    )


def failed_verification(error: BaseException) -> str | None:
    """What failed, in short (OpenSSL's words), when ``error`` is one of the failures
    :func:`permanent_tls_failure` names; None otherwise. A sender that was welcomed at that
    address before retries those (see :mod:`isoplug.logs.reconnect`): whoever answers there
    now is not the receiver it knew, which may be back any moment."""
    cause = _verification_failure(error)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause.verify_message or _reason(cause)
    return None if cause is None else _reason(cause)


def _verification_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error in ``error``'s causes by which the two sides failed to verify each
    other (the receiver's certificate not trusted; this sender's refused, or missing)."""
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        if isinstance(cause, ssl.SSLError) and (
            cause.reason == _CERTIFICATE_REQUIRED or cause.reason in _CERTIFICATE_REFUSED
        ):
            return cause
    return None


def described(error: BaseException, address: str) -> str:
    """``error`` as said, with what likely caused it where a scheme mismatch is likely."""
    said = str(error)
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER":
            return (
                f"{said}; the receiver at {address} did not answer the TLS handshake as TLS; "
                f"is it listening with tls:// and an ssl_context? (a receiver on tcp:// takes "
                f"a tcp:// address, without ssl_context)"
            )
    closed = isinstance(error, RemoteProtocolError) and said.endswith(_CLOSED_IN_HANDSHAKE)
    cut = closed or (
        isinstance(error, ConnectionBroken)
        and isinstance(error.__cause__, ConnectionResetError | BrokenPipeError)
    )
    # A TLS listener closes (resets, mostly) a connection whose first bytes are no handshake.
    if address.startswith("tcp://") and cut:
        return (
            f"{said}; the receiver cut the connection before answering the hello; if it "
            f"listens with TLS, connect with a tls:// address and an ssl_context"
        )
    if isinstance(error, RemoteProtocolError) and not closed:
        # Bytes came back, but no welcome: not a cut, whatever listens there.
        return (
            f"{said}; the receiver at {address} answered the hello with something that is "
            f"not isoplug's protocol: is an isoplug LogReceiver listening there?"
        )
    return said


def _not_verified(error: ssl.SSLCertVerificationError) -> str:
    """What a certificate that failed verification needs done."""
    told = error.verify_message or _reason(error)
    if error.verify_code in _NAME_MISMATCHES:
        return (
            f"the receiver's certificate is not valid for the name connected by ({told}): "
            f"connect by a name its certificate holds, or give the receiver a certificate for "
            f"this one"
        )
    if error.verify_code in (_EXPIRED, _NOT_YET_VALID):
        return (
            f"the receiver's certificate is outside its validity period ({told}): give the "
            f"receiver a current certificate (or check this machine's clock)"
        )
    return f"this sender does not trust the receiver's certificate ({told}): {_TRUST_FIX}"


def _reason(error: ssl.SSLError) -> str:
    return str(error.reason or error)


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it, in turn (a ConnectError wraps the ssl error)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__
    return chain
