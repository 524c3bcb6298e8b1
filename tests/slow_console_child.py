"""``isoplug ARGUMENTS`` whose console writes each batch of lines 0.2 s late: a stdout slower
than the host, as a loaded machine makes it now and then. What the command says on stderr
without waiting for its console then lands before the console's lines every time, not once
in a few runs.

``python -m tests.slow_console_child ARGUMENTS...``"""

from __future__ import annotations

import sys
import time

import isoplug.cli
from isoplug.cli.console_writer import ConsoleWriter

LATE = 0.2


def main() -> None:
    write = ConsoleWriter._write

    def late_write(self: ConsoleWriter, lines: list[str]) -> None:
        if lines:
            time.sleep(LATE)
        write(self, lines)

    ConsoleWriter._write = late_write  # type: ignore[method-assign]
    sys.exit(isoplug.cli.main(sys.argv[1:], ending_process=True))


if __name__ == "__main__":
    main()
