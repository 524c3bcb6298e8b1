"""``isoplug ARGUMENTS`` as the console script runs it, paused at one moment until the test
lets it go: the test then signals it at that moment, not at one that timing picks.

``python -m tests.paused_cli_child POINT PAUSED GO ARGUMENTS...``: at POINT the child creates
the file PAUSED, then waits for the file GO. POINT is

- ``importing``: :func:`isoplug.cli.main` has begun, and imports the command
  (:mod:`isoplug.cli.entry`, about a second on a loaded machine);
- ``protocol-connected``: ``isoplug demo --protocol``'s runner has connected to its host;
- ``before-finish``: the event loop has ended, every plugin stopped; the console's last
  lines not yet written;
- ``at-exit``: the command returned its exit code; the interpreter is ending.

The child imports nothing of the command before its pause point is set (``importing`` must
find :mod:`isoplug.cli.entry` not imported yet)."""

from __future__ import annotations

import atexit
import importlib
import importlib.abc
import importlib.machinery
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import isoplug.cli


class _PausedImport(importlib.abc.MetaPathFinder):
    """Pauses the first import of ``name``, then lets the usual finders find it."""

    def __init__(self, name: str, pause: Callable[[], None]) -> None:
        self._name = name
        self._pause = pause

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self._name:
            sys.meta_path.remove(self)
            self._pause()
        return None


def main() -> None:
    point, paused, go, *arguments = sys.argv[1:]

    def pause() -> None:
        Path(paused).touch()
        while not Path(go).exists():
            time.sleep(0.01)

    if point == "importing":
        sys.meta_path.insert(0, _PausedImport("isoplug.cli.entry", pause))
    elif point == "protocol-connected":
        demo: Any = importlib.import_module("isoplug._foundation_demo")
        say = demo._say

        def paused_say(text: str) -> None:
            say(text)
            if "connected and presented the session token" in text:
                pause()

        demo._say = paused_say
    elif point == "at-exit":
        atexit.register(pause)
    elif point == "before-finish":
        console = importlib.import_module("isoplug.cli.console")
        entry = importlib.import_module("isoplug.cli.entry")
        finish: Callable[..., int] = console.finish_console

        def paused_finish(*args: Any) -> int:
            pause()
            return finish(*args)

        # The name main's command calls, in isoplug.cli.entry's namespace.
        vars(entry)["finish_console"] = paused_finish
    else:
        raise SystemExit(f"unknown pause point {point!r}")
    sys.exit(isoplug.cli.main(arguments, ending_process=True))


if __name__ == "__main__":
    main()
