"""What a runner not ready in time says of its plugins' ``setup()``, for its exit account.

Before the host kills a runner that did not report ready within ``ready_timeout``, it asks
(:data:`~isoplug.control.SETUP_WHERE`, see :mod:`isoplug.runner.setup_where`) which plugin's
``setup()`` runs and where in the plugin's code it waits, so that the account names the
line, as a hung call's does.
"""

from __future__ import annotations

from isoplug.control import SETUP_WHERE
from isoplug.errors import IsoplugError
from isoplug.rpc import Peer
from isoplug.wire.sanitize import clean_text

__all__ = ["SETUP_WHERE_TIMEOUT", "setup_where"]

#: How long the host waits for the answer: an event loop that is free answers at once.
SETUP_WHERE_TIMEOUT = 1.0
#: The longest answer kept: the runner's words (a plugin's path and function names).
_MAX_CHARS = 500


async def setup_where(peer: Peer | None) -> str:
    """The runner's words (cleaned), or what it could not say when it did not answer; "" when
    it is not connected (no plugin code has run) or runs no setup."""
    if peer is None or not peer.is_open:
        return ""
    try:
        said = await peer.request(SETUP_WHERE, timeout=SETUP_WHERE_TIMEOUT)
    except IsoplugError:
        return "its event loop did not say which setup() runs: blocked in a call?"
    return clean_text(said, _MAX_CHARS) if isinstance(said, str) else ""
