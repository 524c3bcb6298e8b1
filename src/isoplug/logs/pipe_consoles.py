"""The plugin's console handlers in ``stdio = "pipe"`` mode: what they render arrives as records.

With ``stdio = "pipe"``, ``sys.stdout`` and ``sys.stderr`` are C text streams onto the
runner's pipes (:func:`~isoplug.logs.redirect.pipe_stdio`): a ``print()`` runs no Python, so
nothing on the stream can tell a handler's rendering of a record from a print, as a
:class:`~isoplug.logs.streams.LogStream` does in the default mode. Unseen, the rendering
would arrive as lines of text at the stream's level, besides the record itself. So
:func:`render_through` puts a :class:`~isoplug.logs.rendered_records.RenderingPipe` where a
handler of the plugin's finds the pipe, which tells renderings as the default mode does
(:func:`~isoplug.logs.rendered_records.forward_rendered`):

- a stream handler's stream (``StreamHandler``, ``basicConfig()``'s, a library's own console);
- a handler of the plugin's own class (not one of ``logging``'s, whose other handlers write
  to files and sockets) holding the pipe, or holding an object that holds it (rich's
  ``RichHandler(console=Console(file=sys.stdout))``);
- ``sys.stdout`` / ``sys.stderr`` themselves while such a handler's ``emit()`` runs
  (:class:`_RenderingWindow`): rich's ``Console``, like many, looks them up at each write.
  Meanwhile another thread's ``print()`` runs :class:`RenderingPipe`'s Python too, as plain
  text; outside those moments a ``print()`` stays free of it, and the handlers of
  ``logging``'s own classes (files, queues, isoplug's) are left as they are, their emit
  unwrapped.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import ModuleType
from typing import Any

from isoplug.logs.kept_forwarder import kept_forwarder
from isoplug.logs.rendered_records import RenderingPipe

__all__ = ["render_through"]

#: The modules whose handler classes never write to ``sys.stdout`` / ``sys.stderr`` as they
#: emit, but through a stream handler's stream (their report of a failure, ``handleError``'s,
#: is text anyway).
_QUIET_MODULES = frozenset({"logging", "logging.handlers"})
#: The mark of an ``emit`` that :func:`render_through` wrapped already.
_RENDERS = "_isoplug_renders_through"


def render_through(pipes: tuple[Any, ...]) -> None:
    """Make what every logger's handlers (a library's own too) render on ``pipes``, the
    ``stdio = "pipe"`` streams of ``sys.stdout`` and ``sys.stderr`` in that order
    (:func:`~isoplug.logs.redirect.pipe_streams`), arrive as the records they render (see the
    module docstring). Idempotent: the runner calls it after the plugins' setup, at each restore of
    its handler and at each look."""
    if not pipes:
        return
    forwarder = kept_forwarder()
    loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            if isinstance(handler, logging.StreamHandler) and _is_pipe(handler.stream, pipes):
                handler.setStream(RenderingPipe(handler.stream))
            if handler is not forwarder and _may_write_to_stdio(handler):
                _render_while_emitting(handler, pipes)


def _is_pipe(value: object, pipes: tuple[Any, ...]) -> bool:
    return any(value is pipe for pipe in pipes)


def _may_write_to_stdio(handler: logging.Handler) -> bool:
    """True if ``handler``'s ``emit`` is not of ``logging``'s or isoplug's making: it may
    write to ``sys.stdout`` or ``sys.stderr`` in ways a stream handler does not."""
    module = getattr(getattr(type(handler), "emit", None), "__module__", None) or ""
    return module not in _QUIET_MODULES and not module.startswith("isoplug.")


def _render_while_emitting(handler: logging.Handler, pipes: tuple[Any, ...]) -> None:
    emit = handler.emit
    if getattr(emit, _RENDERS, False):
        return
    _render_held_pipes(handler, pipes)
    window = _window_over(pipes)

    # Not named emit: rendered_records looks for the handler's own emit() (self, record).
    def emit_through_window(record: logging.LogRecord) -> None:
        window.open()
        try:
            emit(record)
        finally:
            window.close()

    setattr(emit_through_window, _RENDERS, True)
    handler.emit = emit_through_window  # type: ignore[method-assign]


def _render_held_pipes(handler: logging.Handler, pipes: tuple[Any, ...]) -> None:
    """Put a :class:`RenderingPipe` in place of a pipe that ``handler`` keeps in an attribute,
    or that an object it keeps does (a console of its own): taken from ``sys.stdout`` when
    the handler was made, it is not what :class:`_RenderingWindow` swaps."""
    holders: list[object] = [handler]
    for value in list(vars(handler).values()):
        # A module's attributes are its globals (sys.stdout itself): never replaced for good.
        if not isinstance(value, (ModuleType, type)) and hasattr(value, "__dict__"):
            holders.append(value)
    for holder in holders:
        attributes = getattr(holder, "__dict__", None)
        if not isinstance(attributes, dict):
            continue
        for name, value in list(attributes.items()):
            if _is_pipe(value, pipes):
                attributes[name] = RenderingPipe(value)


class _Swap:
    """One of ``sys``'s streams, its pipe, the :class:`RenderingPipe` over it, and whether
    that is in its place now."""

    __slots__ = ("name", "pipe", "rendering", "swapped")

    def __init__(self, name: str, pipe: Any) -> None:
        self.name = name
        self.pipe = pipe
        self.rendering = RenderingPipe(pipe)
        self.swapped = False


class _RenderingWindow:
    """``sys.stdout`` and ``sys.stderr`` as :class:`RenderingPipe` objects over the pipes
    while at least one handler of the plugin's emits, in any thread; the pipes themselves
    again once none does. A stream the plugin put in their place is left alone. Kept to a
    few identity checks under one lock: it runs around every record such a handler emits."""

    def __init__(self, pipes: tuple[Any, ...]) -> None:
        self.pipes = pipes
        self._lock = threading.Lock()
        self._open = 0
        self._swaps = [_Swap(name, pipe) for name, pipe in zip(_NAMES, pipes, strict=False)]

    def open(self) -> None:
        with self._lock:
            self._open += 1
            if self._open == 1:
                for swap in self._swaps:
                    if getattr(sys, swap.name) is swap.pipe:
                        setattr(sys, swap.name, swap.rendering)
                        swap.swapped = True

    def close(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self._put_back()

    def _put_back(self) -> None:
        for swap in self._swaps:
            # Else the plugin put a stream of its own there meanwhile: it stays.
            if swap.swapped and getattr(sys, swap.name) is swap.rendering:
                setattr(sys, swap.name, swap.pipe)
            swap.swapped = False

    def after_fork_in_child(self) -> None:
        # The threads that had it open are gone, and a lock one held at the fork stays held.
        self._lock = threading.Lock()
        self._open = 0
        self._put_back()


#: The ``sys`` streams that the pipes given to :func:`render_through` stand for, in order.
_NAMES = ("stdout", "stderr")
#: The window over the pipes (one pair per process: :func:`~isoplug.logs.redirect.pipe_stdio`).
_windows: list[_RenderingWindow] = []


def _window_over(pipes: tuple[Any, ...]) -> _RenderingWindow:
    if not _windows or _windows[-1].pipes != pipes:
        _windows.append(_RenderingWindow(pipes))
    return _windows[-1]


def _after_fork_in_child() -> None:
    for window in _windows:
        window.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
