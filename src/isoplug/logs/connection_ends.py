"""How a :class:`~isoplug.logs.LogReceiver` keeps track of its senders' ended connections.

An ended connection's accounting may wait (:mod:`isoplug.logs.pending_ends`): a receiver's
close waits for those *deferred* ends within its drain time. Once accounted for, only its final
metrics are kept, for the latest :data:`MAX_ENDED_KEPT`; older ones are summed into one entry,
so a sender that keeps reconnecting, or a pool that keeps forking, cannot grow them without
bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from isoplug.logs.metrics import LogMetrics

if TYPE_CHECKING:
    from isoplug.logs.replay import LogReplayer
    from isoplug.logs.replay_end import Settle

__all__ = ["MAX_ENDED_KEPT", "ConnectionEnds"]

#: Ended connections whose metrics :meth:`LogReceiver.metrics` lists one by one.
MAX_ENDED_KEPT = 1024


class ConnectionEnds:
    """Ended connections by number: the deferred ones, and the final metrics of the others.
    Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._deferred: set[int] = set()
        self.metrics_by_number: dict[int, tuple[str, LogMetrics]] = {}
        self._earlier = LogMetrics()
        self._folded = 0

    @property
    def any_deferred(self) -> bool:
        return bool(self._deferred)

    def deferred(
        self, number: int, replayer: LogReplayer, then: Callable[[], None], run_in: Settle | None
    ) -> bool:
        """Whether the end of connection ``number`` (not clean), replayed by ``replayer``, is
        accounted for later (:meth:`LogReplayer.finish_when_settled`, which calls ``then``);
        until then it is among the deferred ends."""
        # Before it is deferred: the watcher thread may account for it at once.
        with self._lock:
            self._deferred.add(number)
        deferred = False
        try:
            deferred = replayer.finish_when_settled(clean=False, then=then, run_in=run_in)
        finally:
            if not deferred:
                with self._settled:
                    self._deferred.discard(number)
                    self._settled.notify_all()
        return deferred

    def accounted(self, number: int, label: str, metrics: LogMetrics) -> None:
        """Connection ``number``, called ``label``, ended with ``metrics``, all accounted for."""
        with self._settled:
            self.metrics_by_number[number] = (label, metrics)
            self._deferred.discard(number)
            self._settled.notify_all()
            while len(self.metrics_by_number) > MAX_ENDED_KEPT:
                oldest = next(iter(self.metrics_by_number))
                _, folded = self.metrics_by_number.pop(oldest)
                self._earlier = LogMetrics.combined((self._earlier, folded))
                self._folded += 1

    def wait_settled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for every deferred end to be accounted for; whether they
        were."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._deferred, timeout)

    def metrics(self) -> dict[str, LogMetrics]:
        """Each kept connection's metrics by label, the older ones' sum under ``"(N earlier
        connections)"``."""
        with self._lock:
            found = dict(self.metrics_by_number.values())
            if self._folded:
                found[f"({self._folded} earlier connections)"] = self._earlier.snapshot()
        return found
