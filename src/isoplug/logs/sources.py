"""Which code is running now, for the logger names of its output and exceptions.

:data:`current_source` holds the logger prefix of the code running now (``plugin.<id>`` in a
runner, set with :func:`attributed_to` around each plugin's work), or None. Printed lines go to
``<source>.stdout`` / ``<source>.stderr`` (:mod:`isoplug.logs.streams`), uncaught exceptions and
warnings to ``<source>`` (:mod:`isoplug.logs.hooks`); with no source, to the unprefixed loggers.

Some code runs in no one's work: a ``__del__`` that a garbage collection runs in the middle
of whatever allocated (another plugin's call, in a group runner). Whose it is, its file says:
:func:`add_code_home` names the folder each plugin's code lives in, :func:`source_of_code` the
source of a file there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["add_code_home", "attributed_to", "current_source", "source_of_code"]

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


#: Each plugin's folder (ending with a separator), by the source of the code there.
_code_homes: dict[str, str] = {}


def add_code_home(directory: str, source: str) -> None:
    """Code in ``directory`` (an absolute path) is ``source``'s."""
    _code_homes[os.path.join(directory, "")] = source


def source_of_code(filename: str) -> str | None:
    """The source whose folder holds ``filename`` (a code object's), if any."""
    for home, source in _code_homes.items():
        if filename.startswith(home):
            return source
    return None
