"""Where a :class:`~isoplug.Host` is in its one life, and what each stage allows: the
errors that say why a call cannot be made now."""

from __future__ import annotations

import enum

from isoplug.host.status import PluginUnavailable, Unavailability

__all__ = ["HostStage"]


class HostStage(enum.Enum):
    """New, running (from ``start()`` on), closing (from the first ``aclose()`` on), closed
    (once that has returned, for good). The value completes "the host ..." in messages."""

    NEW = "has not been started (use `async with host` or `await host.start()`)"
    RUNNING = "is running already (`async with host` starts it: do not also call start())"
    CLOSING = "is closing (a host runs once: make a new one)"
    CLOSED = "is closed (a host runs once: make a new one)"

    def check_started(self, what: str) -> None:
        """Raise :class:`PluginUnavailable` before ``start()`` (there are no plugins yet)."""
        if self is HostStage.NEW:
            raise PluginUnavailable(
                f"cannot {what}: the host {self.value}", reason=Unavailability.HOST_NOT_RUNNING
            )

    def check_changing(self, what: str) -> None:
        """Raise :class:`PluginUnavailable` once no plugin's state can change any more (the
        host is closed, not merely closing), or before ``start()``."""
        if self in (HostStage.NEW, HostStage.CLOSED):
            raise PluginUnavailable(
                f"cannot {what}: the host {self.value}", reason=Unavailability.HOST_NOT_RUNNING
            )

    def check_running(self, what: str) -> None:
        """Raise :class:`PluginUnavailable` unless the host runs (started, not closed)."""
        if self is not HostStage.RUNNING:
            raise PluginUnavailable(
                f"cannot {what}: the host {self.value}", reason=Unavailability.HOST_NOT_RUNNING
            )
