"""Every exception isoplug raises, in one tree.

Errors are named after who caused them: *Local* means this process broke a rule, *Remote*
means the other side did; *Closed* means a connection ended in an orderly way, *Broken* means
it ended without warning. Lower layers' exceptions (``OSError``, ``ssl.SSLError``,
``msgspec.DecodeError``) are translated at the layer edge with ``raise ... from exc`` so the
original stays reachable as ``__cause__``::

    IsoplugError
    ├── AddressError (ValueError)          an address string that does not parse
    ├── TransportError                     the byte stream failed
    │   ├── ConnectError                   nothing listens there, or it refused us
    │   ├── ConnectionClosed               used after an orderly close (ours or the peer's)
    │   └── ConnectionBroken               the peer vanished: EOF mid-frame, reset, dead process
    ├── ProtocolError                      the bytes or messages broke the wire protocol
    │   ├── LocalProtocolError             we tried to send something the protocol forbids now
    │   └── RemoteProtocolError            the peer sent garbage, an oversized frame, a
    │                                      message that is wrong for the connection's state
    ├── HandshakeError                     the session could not be opened
    │   ├── AuthenticationFailed           wrong session token
    │   ├── VersionMismatch                no protocol version both sides speak
    │   └── HandshakeTimeout               no hello / welcome within the deadline
    ├── RequestTimeout (TimeoutError)      no response within the request's timeout
    ├── UnencodableValue (TypeError)       a value cannot cross the process boundary
    ├── SelfForwarding                     logs sent to a receiver of the same process
    ├── NoTemporaryFolder (OSError)        no temporary folder can take a private folder
    ├── PluginFailed                       a plugin failed for good (``Host.wait_ready``)
    ├── WaitTimeout (TimeoutError)         a wait's time ran out (``wait_for``, ``wait_ready``)
    ├── UsageError (RuntimeError)          not now or not here: started twice, other loop...
    ├── FolderMissing (FileNotFoundError)  the plugins folder (or a plugin's) does not exist
    ├── NotAFolder (NotADirectoryError)    the plugins folder is a file
    ├── FolderUnreadable (PermissionError) the plugins folder cannot be read
    ├── ConfigInvalid (ValueError)         a plugin's configuration does not fit its schema
    ├── CapabilityFailed                   a host capability a plugin called raised
    └── RemoteError                        the remote side answered a request with an error
        ├── MethodNotFound                 no handler is registered for that method
        ├── InvalidParams                  the parameters do not fit the handler
        ├── RequestCancelled               the remote handler was cancelled before finishing
        └── PluginBusy                     refused at once: too many requests in flight there

Catching ``IsoplugError`` catches everything isoplug raises on purpose but two kinds, said in
docs/reference/errors.md: a ``TypeError`` / ``ValueError`` for an argument of the wrong type
or value, and what your own code (a predicate, a callback) raises; anything else escaping
isoplug is a bug. Every one pickles to an equal one (a ``ProcessPoolExecutor`` job hands it
back to its parent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AddressError",
    "AuthenticationFailed",
    "CapabilityFailed",
    "ConfigInvalid",
    "ConnectError",
    "ConnectionBroken",
    "ConnectionClosed",
    "FolderMissing",
    "FolderUnreadable",
    "FrameTooLarge",
    "HandshakeError",
    "HandshakeTimeout",
    "InvalidParams",
    "IsoplugError",
    "LocalProtocolError",
    "MethodNotFound",
    "NoTemporaryFolder",
    "NotAFolder",
    "PluginBusy",
    "PluginFailed",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "RequestCancelled",
    "RequestTimeout",
    "SelfForwarding",
    "TransportError",
    "UnencodableValue",
    "UsageError",
    "ValueTooLarge",
    "VersionMismatch",
    "WaitTimeout",
]


class IsoplugError(Exception):
    """Base of every exception isoplug raises deliberately."""


def _unpickled(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An exception as pickled: its ``args`` as they were, without running a constructor whose
    signature differs from them (pickle then restores its attributes)."""
    exception = cls.__new__(cls, *args)
    # OSError's __new__ leaves them to an __init__ a subclass overrides (PluginNotReady's).
    exception.args = args
    return exception


class WaitTimeout(IsoplugError, TimeoutError):
    """A wait's time ran out before what it waited for came (:meth:`isoplug.Host.wait_for`,
    :meth:`isoplug.Host.wait_ready`, the test harness's waits): the message says what it
    waited for and how things stand. A ``TimeoutError`` too, as those waits raised before."""


class UsageError(IsoplugError, RuntimeError):
    """Not now, or not here: a host started twice (a second ``async with host``), used from
    another event loop or with no asyncio loop running, a test harness used before it runs, an
    OpenTelemetry export started twice, an optional extra missing. The message says what to
    do instead. A ``RuntimeError`` too, as these raised before."""


class FolderMissing(IsoplugError, FileNotFoundError):
    """The plugins folder (a ``Host``'s ``plugins_dir``, a test harness's plugin folder) does
    not exist; a ``FileNotFoundError`` too."""


class NotAFolder(IsoplugError, NotADirectoryError):
    """The plugins folder is a file, not a folder; a ``NotADirectoryError`` too."""


class FolderUnreadable(IsoplugError, PermissionError):
    """The plugins folder cannot be read by this process (the message says which permission
    is missing); a ``PermissionError`` too."""


class AddressError(IsoplugError, ValueError):
    """An address is not one of ``unix:/path``, ``tcp://host:port``, ``tls://host:port``."""


def hidden_from_pytest(excinfo: Any) -> bool:
    """Whether pytest leaves a frame out of a failing test's report: the modules a plugin's
    test calls through set ``__tracebackhide__`` to this at their top. True for an error
    isoplug raises on purpose (an :class:`IsoplugError`, or a wait's ``TimeoutError``): the
    report then shows the test's line and the error (a plugin's, with its remote traceback),
    not a hundred lines of isoplug's own source. An unexpected exception (a bug in isoplug)
    keeps every frame; so does ``pytest --full-trace``."""
    return isinstance(getattr(excinfo, "value", None), IsoplugError | TimeoutError)


class TransportError(IsoplugError):
    """The byte stream under a connection failed."""


class ConnectError(TransportError):
    """Could not connect: nothing listens at the address, or it refused the connection."""


class ConnectionClosed(TransportError):
    """The connection was closed in an orderly way and can no longer be used."""


class ConnectionBroken(TransportError):
    """The peer vanished without an orderly goodbye (EOF mid-frame, reset, process died)."""


class ProtocolError(IsoplugError):
    """The wire protocol was violated; the connection is unusable afterwards."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow in the current state."""


class FrameTooLarge(LocalProtocolError):
    """A message would take more than the connection's frame limit once encoded (nothing was
    sent; the connection stays usable): :attr:`size` and :attr:`limit` are in bytes."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"refusing to send a frame of {size:,} bytes: the limit is {limit:,} bytes"
        )
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size, self.limit))


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or a message that the protocol does not allow."""


class HandshakeError(IsoplugError):
    """The connection could not be opened as a session."""


class AuthenticationFailed(HandshakeError):
    """The connecting side presented a wrong session token."""


class VersionMismatch(HandshakeError):
    """The two sides share no protocol version: :attr:`peer_versions` is the other side's
    range (``(low, high)``; None where it did not say) and :attr:`peer_library` its isoplug
    version (empty where it did not say)."""

    peer_versions: tuple[int, int] | None = None
    peer_library: str = ""


class HandshakeTimeout(HandshakeError, TimeoutError):
    """The handshake did not complete within its deadline."""


class RequestTimeout(IsoplugError, TimeoutError):
    """A request got no response within its timeout; a cancel was sent to the peer.

    ``late_answer``, when the caller asked the peer for it, is a task that gives the answer
    the other side sent after the cancel within a short grace (a wire ``Response`` or
    ``ErrorResponse``; None if none came): what became of the request, as the other side says.
    """

    late_answer: object = None

    def __reduce__(self) -> tuple[Any, ...]:
        # A task of this process's event loop means nothing in another (nor pickles).
        state = {name: value for name, value in self.__dict__.items() if name != "late_answer"}
        return (type(self), self.args, state)


class UnencodableValue(IsoplugError, TypeError):
    """A value cannot be sent to the other process: its message says where in the value
    (``result["points"][2]``) and what type the part is, or how large it is once encoded
    against what a message may take. docs/plugins.md says what crosses."""


class ValueTooLarge(UnencodableValue, FrameTooLarge):
    """A value encodes, but into more than a message may take: an :class:`UnencodableValue`
    saying the call or event, and the :class:`FrameTooLarge` the frame layer raised (so a
    ``LocalProtocolError``, as such values raised before)."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        Exception.__init__(self, message)
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.size, self.limit))


class SelfForwarding(IsoplugError):
    """A log sender aimed at a :class:`~isoplug.logs.LogReceiver` open in its own process, where
    every record it sends would be replayed back into it and sent again, for ever."""


class NoTemporaryFolder(IsoplugError, OSError):
    """No temporary folder could take a private folder of isoplug's (its sockets' folders):
    ``tried`` holds each folder tried and why it refused (``No space left on device``,
    ``Permission denied``...); ``errno`` is the preferred folder's (``$TMPDIR``, else
    ``/tmp``). The system refused what the host needs, not a missing plugins folder."""

    def __init__(self, tried: Sequence[tuple[str, str]], number: int | None = None) -> None:
        self.tried: list[tuple[str, str]] = list(tried)
        reasons = "; ".join(f"{place}: {why}" for place, why in self.tried) or "none"
        super().__init__(
            number,
            f"no temporary folder can take isoplug's private folders (its sockets): {reasons} "
            "(the working directory is never used: sockets do not belong in a project "
            "folder); free room there, or set TMPDIR to a writable folder with room",
        )

    def __str__(self) -> str:
        # OSError's own would start with "[Errno 28]", which the reasons name already.
        return str(self.strerror)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.tried, self.errno))


class PluginFailed(IsoplugError):
    """Plugins failed for good (they cannot be loaded, or crashed more often than their restart
    policy allows); ``failures`` maps each one's id to its last error (the host's sanitized
    account, with the plugin's traceback when there is one)."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        count = len(self.failures)
        lines = [
            f"{count} plugin{'s' if count != 1 else ''} failed: {', '.join(self.failures)}",
            *(f"{plugin_id}: {error}" for plugin_id, error in self.failures.items()),
        ]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickled, (type(self), self.args), self.__dict__)


class CapabilityFailed(IsoplugError):
    """A host capability a plugin called raised: the plugin gets the exception's type and
    message, and the traceback stays on the host (logged there): a host's code and paths are
    none of a plugin's business."""

    #: True on the host's instance: the RPC layer then sends no traceback with it (see
    #: isoplug.rpc.remote_errors). The plugin's own CapabilityFailed, raised in its runner,
    #: keeps its traceback, which is the plugin's.
    traceback_is_private: bool = False


class ConfigInvalid(IsoplugError, ValueError):
    """A plugin's configuration does not fit the schema it declares (``config_schema``); the
    message names the plugin and the field."""


class RemoteError(IsoplugError):
    """The remote side answered a request with an error.

    ``remote_type`` is the qualified name of the exception raised remotely (for example
    ``"builtins.ValueError"``), ``remote_message`` its ``str()``, and ``remote_traceback`` the
    formatted traceback text from the remote process ("" when the remote sent none).
    """

    code = "error"

    def __init__(
        self,
        method: str,
        remote_type: str,
        remote_message: str,
        remote_traceback: str = "",
    ) -> None:
        self.method = method
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(method, remote_type, remote_message, remote_traceback)

    def __str__(self) -> str:
        text = (
            f"{self.method!r} failed on the remote side: {self.remote_type}: {self.remote_message}"
        )
        if self.remote_traceback:
            text += "\n--- remote traceback ---\n" + self.remote_traceback.rstrip("\n")
        return text


class MethodNotFound(RemoteError):
    """The remote side has no handler registered for the requested method.

    A host knows the methods each plugin offers and refuses a call of another one itself,
    without asking the runner: then :attr:`asked` is False, and the message says the call
    was not sent."""

    code = "method_not_found"
    #: Whether the remote side was asked (False: the host refused the call itself).
    asked = True

    def __str__(self) -> str:
        if self.asked:
            return super().__str__()
        return f"{self.method!r} was not sent: {self.remote_message}"


class InvalidParams(RemoteError):
    """The parameters of a request do not fit the remote handler."""

    code = "invalid_params"


class RequestCancelled(RemoteError):
    """The remote handler was cancelled (by our cancel, or because the remote shut down)."""

    code = "cancelled"


class PluginBusy(RemoteError):
    """The other side refused the request at once: it already runs its limit of requests
    (a runner: ``SupervisorConfig.max_concurrent_calls``) and as many wait as it queues
    (``max_queued_calls``). The message names the limit and how many are in flight. Nothing
    ran: the request may be sent again once some have ended."""

    code = "busy"


REMOTE_ERROR_BY_CODE: dict[str, type[RemoteError]] = {
    cls.code: cls
    for cls in (RemoteError, MethodNotFound, InvalidParams, RequestCancelled, PluginBusy)
}
