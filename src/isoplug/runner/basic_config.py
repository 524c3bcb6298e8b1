"""``logging.basicConfig()`` in a runner as in a fresh interpreter.

``basicConfig()`` without ``force=True`` does nothing at all when the root logger has a
handler already, and in a runner it always has one: isoplug's forwarding handler. The most
common script idiom, ``logging.basicConfig(filename="app.log", level=logging.WARNING)``, then
silently did nothing in a plugin (no file, its level ignored) while it works in a program of
its own. So the runner's ``basicConfig`` does not count isoplug's handler
(:func:`configure_as_if_alone`): when it is the root's only one, the plugin's call configures
the root as it would in a fresh interpreter (its handler, a file or a stream, its format, its
level), and isoplug's handler stays on the root logger beside it. A second call finds the
plugin's handler there and does nothing, as anywhere.

``basicConfig()`` with no ``filename`` adds a console handler on ``sys.stderr`` (or the
``stream`` given, ``sys.stdout`` included), as anywhere, rather than none: the plugin's
``root.handlers`` are then what they are in a program of its own, and nothing arrives twice.
What that handler writes while it handles a record is the record's rendering, so the record
arrives once, as itself, not also as a line of text (:mod:`isoplug.logs.rendered_records`; in
``stdio = "pipe"`` mode the runner puts its rendering stream under that handler at once,
:func:`~isoplug.runner.kept_forwarding.render_consoles`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from isoplug.logs.kept_forwarder import kept_forwarder
from isoplug.runner.kept_forwarding import LOGGING_LOCK, render_consoles

__all__ = ["configure_as_if_alone"]


class _HandlersNotCountingIsoplugs(list[logging.Handler]):
    """The root's handlers while the plugin's ``basicConfig()`` runs: every handler is there
    (a record another thread logs meanwhile still reaches isoplug's), but ``basicConfig``'s
    ``len(root.handlers) == 0`` does not count isoplug's."""

    def __init__(self, handlers: list[logging.Handler], isoplugs: logging.Handler) -> None:
        super().__init__(handlers)
        self._isoplugs = isoplugs

    def __len__(self) -> int:
        return sum(1 for handler in self if handler is not self._isoplugs)


def configure_as_if_alone() -> None:
    """Make ``logging.basicConfig`` not count the runner's forwarding handler (see the module
    docstring). Once; a process without a forwarding handler named keeps Python's."""
    original: Callable[..., None] = logging.basicConfig
    if getattr(original, "_isoplug", False):
        return

    @functools.wraps(original)
    def basic_config(**kwargs: Any) -> None:
        forwarder = kept_forwarder()
        root = logging.getLogger()
        # Taken as basicConfig() takes it (reentrant): no other configuration in between.
        with LOGGING_LOCK:
            if (
                forwarder is None
                or kwargs.get("force")  # it removes and closes isoplug's: KeptForwarding's case
                or root.handlers != [forwarder]
            ):
                original(**kwargs)
                return
            root.handlers = _HandlersNotCountingIsoplugs(root.handlers, forwarder)
            try:
                original(**kwargs)
            finally:
                # A plain list again, what the plugin's code expects to find there.
                root.handlers = list(root.handlers)
            render_consoles()

    basic_config._isoplug = True  # type: ignore[attr-defined]
    logging.basicConfig = basic_config
