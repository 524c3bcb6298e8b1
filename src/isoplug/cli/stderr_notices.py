"""What the console says about itself on stderr (lines dropped, lines not written, stdout
unwritable), written by a thread of its own.

stderr is often the very file stdout is (a terminal, ``2>&1``), and then it is stuck when
stdout is: a terminal paused with Ctrl-S takes neither. The thread that finds something to
say (one that logs, the host's event loop among them, or the console's writer) must not wait
on it, so it hands the text over here and goes on; the command's exit waits for these notices
a bounded time only (:meth:`StderrNotices.wait`).
"""

from __future__ import annotations

import collections
import threading

from isoplug.cli.say import write_stderr

__all__ = ["StderrNotices"]

#: Notices kept while stderr takes none; older ones give way (each says all it has to).
_MOST_WAITING = 16


class StderrNotices:
    """Says each notice on ``sys.stderr``, in order, from a daemon thread started on the first
    one."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._waiting: collections.deque[str] = collections.deque(maxlen=_MOST_WAITING)
        self._writing = False
        self._thread: threading.Thread | None = None

    def say(self, text: str) -> None:
        """Have ``text`` (one or more lines, without the last newline) said; never waits."""
        with self._changed:
            self._waiting.append(text)
            self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="isoplug-console-notices", daemon=True
                )
                self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait until every notice is said, ``timeout`` seconds at most; True if they were."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._waiting and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._waiting))
                text = self._waiting.popleft()
                self._writing = True
            try:
                write_stderr(text)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()
