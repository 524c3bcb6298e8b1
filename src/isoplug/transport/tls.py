"""TLS contexts for ``tls://`` addresses: made from PEM files, checked before a listener uses one.

:func:`tls_server_context` and :func:`tls_client_context` turn what OpenSSL says about a bad
file (``[Errno 2]`` without the file's name, ``[SSL] PEM lib``, a pass phrase prompt on the
terminal) into an error naming the file and the fix, and warn about a certificate past its
``notAfter``. :func:`check_server_context` refuses, where a listener is made, a context that
cannot serve: one made for clients. :func:`tls_failure_hint` adds what a failed server
handshake most likely means.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable

from isoplug.errors import TransportError
from isoplug.log_guard import guarded_logger

__all__ = [
    "check_server_context",
    "tls_client_context",
    "tls_failure_hint",
    "tls_handshake_failed",
    "tls_server_context",
]

_log = guarded_logger("isoplug.transport")

Password = str | bytes | Callable[[], str | bytes]

#: How a server context is made, said by every message refusing one.
SERVER_CONTEXT_FIX = (
    "make it with ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) and load_cert_chain(), "
    "or with isoplug.transport.tls_server_context(certfile, keyfile)"
)


class _KeyIsEncrypted(Exception):
    """Raised by the password callback given when no password was: OpenSSL would prompt."""


def tls_server_context(
    certfile: str,
    keyfile: str | None = None,
    *,
    client_cafile: str | None = None,
    password: Password | None = None,
) -> ssl.SSLContext:
    """A server-side TLS context; with ``client_cafile``, clients must present a certificate.

    ``password`` decrypts an encrypted key (a string, bytes, or a function returning one);
    without it an encrypted key is refused, never prompted for. Raises :class:`ValueError`
    naming the file and the fix when a file is missing, unreadable, not PEM, its key is
    encrypted or does not match. A certificate past its ``notAfter`` is warned about, once,
    here (on the ``isoplug.transport`` logger), not refused."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, certfile, keyfile, password)
    if client_cafile is not None:
        _load_trust(context, client_cafile, "client_cafile")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_client_context(
    cafile: str | None = None,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    password: Password | None = None,
) -> ssl.SSLContext:
    """A client-side TLS context trusting ``cafile`` (or the system store when ``None``);
    ``certfile``/``keyfile``/``password`` give it a client certificate. Errors as
    :func:`tls_server_context`."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None:
        _load_trust(context, cafile, "cafile")
    if certfile is not None:
        _load_chain(context, certfile, keyfile, password)
    return context


def _read_pem(path: str, what: str) -> str:
    """The text of ``path``, or a ValueError naming it and why it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read().decode("ascii", "replace")
    except FileNotFoundError:
        raise ValueError(
            f"{what} {path!r} does not exist (working directory: {_cwd()}); give the path of "
            "a PEM file"
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path!r} is a directory; give the path of a PEM file") from None
    except PermissionError:
        raise ValueError(
            f"{what} {path!r} cannot be read by this process (permission denied); make it "
            "readable by the user the program runs as"
        ) from None
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "(deleted)"


def _load_chain(
    context: ssl.SSLContext, certfile: str, keyfile: str | None, password: Password | None
) -> None:
    certificate = _read_pem(certfile, "certfile")
    if "-----BEGIN CERTIFICATE-----" not in certificate:
        raise ValueError(
            f"certfile {certfile!r} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' "
            "line); give the certificate in PEM form (openssl x509 -in cert.der -inform der "
            "-out cert.pem converts a DER one)"
        )
    key_path, key_what = (certfile, "certfile") if keyfile is None else (keyfile, "keyfile")
    key = certificate if keyfile is None else _read_pem(keyfile, "keyfile")
    if "PRIVATE KEY-----" not in key:
        fix = (
            "give the key file as keyfile="
            if keyfile is None
            else "give the private key in PEM form"
        )
        raise ValueError(
            f"{key_what} {key_path!r} holds no PEM private key (no '-----BEGIN ... PRIVATE "
            f"KEY-----' line); {fix}"
        )

    def no_password() -> str:
        raise _KeyIsEncrypted

    try:
        context.load_cert_chain(
            certfile, keyfile, password=no_password if password is None else password
        )
    except _KeyIsEncrypted:
        raise ValueError(
            f"the private key in {key_path!r} is encrypted (protected by a pass phrase); pass "
            "its pass phrase as password=..., or give an unencrypted key (openssl pkey -in "
            "key.pem -out plain.pem)"
        ) from None
    except ssl.SSLError as exc:
        if password is not None and "ENCRYPTED" in key:
            why = "the password does not decrypt its key"
        else:
            why = "the key does not match the certificate, or a file is damaged"
        raise ValueError(
            f"cannot load certificate {certfile!r} with key {key_path!r}: {why} ({exc})"
        ) from None
    _warn_if_expired(certfile)


def _load_trust(context: ssl.SSLContext, cafile: str, what: str) -> None:
    text = _read_pem(cafile, what)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(
            f"{what} {cafile!r} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' "
            "line); give the CA certificate in PEM form"
        )
    try:
        context.load_verify_locations(cafile)
    except ssl.SSLError as exc:
        raise ValueError(f"{what} {cafile!r}: cannot load its certificates: {exc}") from None


def _warn_if_expired(certfile: str) -> None:
    """A certificate past its end fails every peer's check: said once, where it is loaded
    (not refused: a peer told not to verify still works, and a clock may be wrong)."""
    # CPython's own certificate parser, the one getpeercert() uses, is only reachable so;
    # without it (another implementation) nothing is said.
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return
    try:
        not_after = decode(certfile).get("notAfter")
        if not not_after or ssl.cert_time_to_seconds(not_after) > time.time():
            return
    except (ssl.SSLError, ValueError, OSError) as exc:
        _log.debug("could not read the end date of %s: %s", certfile, exc)
        return
    _log.warning(
        "the certificate in %r expired on %s: every peer that verifies it will refuse it; renew it",
        certfile,
        not_after,
    )


def check_server_context(context: ssl.SSLContext, where: str) -> None:
    """Refuse a context a listener at ``where`` cannot serve with: one made for clients
    (``ssl.create_default_context()`` without ``Purpose.CLIENT_AUTH``), whose every handshake
    would fail. Raises ValueError naming the fix."""
    if context.protocol is ssl.PROTOCOL_TLS_CLIENT or context.check_hostname:
        raise ValueError(
            f"the ssl_context given to listen on {where} is a client's (check_hostname is "
            f"{context.check_hostname}, protocol {context.protocol.name}): no client could "
            f"finish a handshake with it; {SERVER_CONTEXT_FIX}"
        )


#: OpenSSL's reasons for a server handshake that saw no TLS at all.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE")


def tls_failure_hint(error: BaseException) -> str:
    """What a server's failed handshake most likely means, as ``"; ..."`` (empty: nothing)."""
    reason = getattr(error, "reason", None) or ""
    if reason == "NO_SHARED_CIPHER":
        return (
            "; does the receiver's ssl_context have a certificate (load_cert_chain)? "
            + SERVER_CONTEXT_FIX
        )
    if reason in _NOT_TLS:
        return (
            "; the client does not speak TLS: a plaintext (tcp://) client connected to this "
            "tls:// listener? use tls:// with an ssl_context on both sides"
        )
    return ""


def tls_handshake_failed(error: BaseException) -> TransportError:
    """What a listener says of a client whose TLS handshake failed, either mode."""
    return TransportError(f"TLS handshake with a client failed: {error}{tls_failure_hint(error)}")
