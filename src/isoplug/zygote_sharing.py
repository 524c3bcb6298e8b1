"""The switch for zygotes shared by the hosts of this process (see
:mod:`isoplug.host.zygote_pool`, which keeps the zygotes).

It is kept apart from the pool, and imports nothing of isoplug's, because isoplug's pytest
plugin turns it on in every pytest session of an environment where isoplug is installed, most
of them sessions of projects that never start a host: importing the host there would cost
each of their runs a few hundred modules, every one rewritten by pytest's assertion rewriter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["share_zygotes", "sharing", "when_turned_off"]

_lock = threading.Lock()
_enabled = False
_turned_off_listeners: list[Callable[[], None]] = []


def share_zygotes(enabled: bool = True) -> bool:
    """Turn sharing a zygote between the hosts of this process on or off; returns whether it
    was on. Turned off, hosts started from then on get zygotes of their own, and the shared
    ones no host uses any more end."""
    global _enabled
    with _lock:
        was, _enabled = _enabled, enabled
        listeners = [] if enabled else list(_turned_off_listeners)
    # After the switch, so that a zygote a host lets go meanwhile sees it off and ends too.
    for listener in listeners:
        listener()
    return was


def sharing() -> bool:
    """Whether hosts started now share zygotes."""
    return _enabled


def when_turned_off(listener: Callable[[], None]) -> None:
    """Call ``listener`` each time sharing is turned off (by the thread that turns it off)."""
    with _lock:
        _turned_off_listeners.append(listener)
