"""Which code is running now, for the logger names of its output and exceptions.

:data:`current_source` holds the logger prefix of the code running now (``plugin.<id>`` in a
runner, set with :func:`attributed_to` around each plugin's work), or None. Printed lines go to
``<source>.stdout`` / ``<source>.stderr`` (:mod:`isoplug.logs.streams`), uncaught exceptions and
warnings to ``<source>`` (:mod:`isoplug.logs.hooks`); with no source, to the unprefixed loggers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["attributed_to", "current_source"]

#: The logger prefix of the code running now (``plugin.<id>`` in a runner), or None: output and
#: exceptions go to ``<source>.<stream>`` / ``<source>``. A context variable, so asyncio tasks
#: and ``asyncio.to_thread`` inherit it; a plain ``threading.Thread`` starts without it (a
#: group runner passes it on: :mod:`isoplug.runner.thread_sources`).
current_source: ContextVar[str | None] = ContextVar("isoplug_log_source", default=None)


@contextlib.contextmanager
def attributed_to(source: str) -> Iterator[None]:
    """Run the block (and what it starts: tasks, ``to_thread``) with :data:`current_source`
    set to ``source``."""
    token = current_source.set(source)
    try:
        yield
    finally:
        current_source.reset(token)
