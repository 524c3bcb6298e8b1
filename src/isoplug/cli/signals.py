"""The signals that stop ``isoplug run`` and ``isoplug demo``, and the exit codes they leave.

The first SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal closed) asks for a clean stop;
another one kills every runner at once. A repeat within :data:`REPEAT_WINDOW` of the first
is the same request, not a second one: ``kill -INT p; kill -INT p``, GNU ``timeout`` (which
signals the command, then its process group) and a terminal that sends SIGHUP and then
SIGTERM (or SIGCONT) all deliver two signals within a few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from isoplug.runner import eventloop

#: Exit code: stopped on request, and nothing went wrong.
EXIT_OK = 0
#: Exit code: a plugin was skipped (invalid manifest) or failed during the run (with
#: ``--reload``: at the end), every plugin failed for good (the command then ends on its own,
#: see :mod:`isoplug.cli.running`), or there was nothing to run.
EXIT_PLUGIN_FAILED = 1
#: Exit code: the command line or its files are unusable (argparse's code for usage errors).
EXIT_USAGE = 2
#: Exit code after a second signal killed every runner at once (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Exit code when the reader of stdout went away (a closed pipe: ``| head``); 128 + SIGPIPE,
#: what a shell shows for a command killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141

#: Signals that stop the command cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: A stop signal this soon (seconds) after the first one repeats it rather than asking again.
REPEAT_WINDOW = 0.3


def run_until_stopped(
    body: Callable[[asyncio.Event], Awaitable[int]], loop: str | None = None
) -> int:
    """Run ``body(stop)`` in a new event loop and return its exit code; ``loop`` names the
    loop (``"asyncio"``, ``"uvloop"``; default: as :mod:`isoplug.runner.eventloop` picks,
    uvloop when installed, as in the runners).

    The first stop signal sets ``stop`` (``body`` then stops its host cleanly); another one,
    later than :data:`REPEAT_WINDOW`, cancels ``body``, which kills every runner at once.
    """
    result: int = eventloop.run(_with_signals(body), loop)
    return result


async def _with_signals(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    first: float | None = None
    log = logging.getLogger("isoplug.cli")

    def on_signal(signum: signal.Signals) -> None:
        nonlocal first
        now = time.monotonic()
        if first is None:
            first = now
            log.warning("%s: stopping every plugin (again to kill them at once)", signum.name)
            stop.set()
        elif now - first < REPEAT_WINDOW:
            log.info(
                "%s %.0f ms after the first signal: the same request (again to kill them at once)",
                signum.name,
                (now - first) * 1000,
            )
        else:
            log.error("%s again: killing every runner now", signum.name)
            task.cancel(f"{signum.name} again")

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await body(stop)
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
