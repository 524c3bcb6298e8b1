"""What a closing receiver says of the connections still open when its drain time is up.

It used to call each of them a sender "still connected", whose undelivered records are lost:
said of a sender that had exited 4 s before, whose records waited here, unread behind a slow
handler (found by an outside check). The kernel tells the two apart without a byte being read:
a connection whose sender closed its end (it exited, crashed, or closed its handler) shows
``POLLRDHUP``; all it will ever send is here already, and only this side's pace kept it open.
Either way replay stops then, and what was not replayed is lost: each connection's own report
says how many (see :mod:`isoplug.logs.ledger_reports`), and :func:`closed_summary` the sum once
the receiver has closed.
"""

from __future__ import annotations

import select
from collections.abc import Iterable

from isoplug.logs.metrics import DropReason, LogMetrics

__all__ = ["closed_summary", "drain_warning", "sender_hung_up"]

#: Set once the peer closed its end; not on every system (then a full hang-up only).
_PEER_CLOSED = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR | select.POLLNVAL


def sender_hung_up(fd: int | None) -> bool:
    """Whether the sender of the connection on ``fd`` closed its end, asked of the kernel
    without reading (what it sent before stays to be read). A connection whose socket this
    side closed already (``None``, ``-1``) is over too."""
    if fd is None or fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, _PEER_CLOSED)
    return any(events & _PEER_CLOSED for _, events in poller.poll(0))


def drain_warning(connected: int, hung_up: int, drain_timeout: float) -> str:
    """The warning when the drain time is up: ``connected`` connections' senders are still
    connected, ``hung_up`` had a sender that ended its connection (:func:`sender_hung_up`)."""
    said = []
    if connected:
        said.append(
            f"{connected} log sender(s) still connected after {drain_timeout:.1f} s; closing "
            "them (what they have not delivered yet is lost)"
        )
    if hung_up:
        said.append(
            f"{hung_up} log sender(s) that ended their connection (exited, or closed their "
            f"handler) still had records here not replayed after {drain_timeout:.1f} s; "
            "replay stops (what is not replayed yet is lost)"
        )
    return "; also, ".join(said)


def closed_summary(metrics: Iterable[LogMetrics], cut: int) -> str | None:
    """What the close cost, in all, the ``cut`` connections it ended: None when nothing."""
    lost = sum(m.dropped.get(DropReason.RECEIVER_CLOSED, 0) for m in metrics)
    if not lost:
        return None
    return (
        f"the log receiver closed {cut} connection(s) at the end of its drain time: {lost:,} "
        "log records they sent or had accepted were not replayed and are lost (counted as "
        "receiver_closed in metrics(); the reports above say whose)"
    )
