"""``isoplug ARGUMENTS`` as the console script runs it, paused at one moment of its end until
the test lets it go: the test then signals it at that moment, not at one that timing picks.

``python -m tests.paused_cli_child POINT PAUSED GO ARGUMENTS...``: at POINT the child creates
the file PAUSED, then waits for the file GO. POINT is ``before-finish`` (the event loop has
ended, every plugin stopped; the console's last lines not yet written) or ``at-exit`` (the
command returned its exit code; the interpreter is ending)."""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path
from typing import Any

import isoplug.cli
import isoplug.cli.console
import isoplug.cli.entry


def main() -> None:
    point, paused, go, *arguments = sys.argv[1:]

    def pause() -> None:
        Path(paused).touch()
        while not Path(go).exists():
            time.sleep(0.01)

    if point == "at-exit":
        atexit.register(pause)
    elif point == "before-finish":
        finish = isoplug.cli.console.finish_console

        def paused_finish(*args: Any) -> int:
            pause()
            return finish(*args)

        # The name main's command calls, in isoplug.cli.entry's namespace.
        vars(isoplug.cli.entry)["finish_console"] = paused_finish
    else:
        raise SystemExit(f"unknown pause point {point!r}")
    sys.exit(isoplug.cli.main(arguments, ending_process=True))


if __name__ == "__main__":
    main()
