"""``python -m isoplug.runner``: a runner process, started by the host's supervisor.

It reads one JSON line (a :class:`~isoplug.control.Bootstrap`) from stdin, which the host then
closes, and runs :func:`~isoplug.runner.session.run_runner`. Not meant to be started by hand.
"""

from __future__ import annotations

import asyncio
import faulthandler
import sys

import msgspec

from isoplug.control import EXIT_BAD_BOOTSTRAP, Bootstrap
from isoplug.runner.logging_setup import capture_python_output, configure_runner_logging
from isoplug.runner.session import run_runner

#: The bootstrap is a few hundred bytes per plugin; a line longer than this is not one.
_MAX_BOOTSTRAP_BYTES = 1024 * 1024


def main() -> int:
    # A fatal crash (segfault in a C extension) prints every thread's stack on stderr, which
    # the host captures and attributes to this runner. Enabled before sys.stderr is replaced
    # (capture_python_output): it keeps writing to the real file descriptor 2.
    faulthandler.enable()
    line = sys.stdin.buffer.readline(_MAX_BOOTSTRAP_BYTES)
    try:
        bootstrap = msgspec.json.decode(line, type=Bootstrap)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(
            f"isoplug runner: expected a bootstrap line on stdin (started by hand?): {exc}",
            file=sys.stderr,
        )
        return EXIT_BAD_BOOTSTRAP
    sys.stdin.close()
    if configure_runner_logging(bootstrap) is not None:
        # Without forwarding, stdout and stderr stay the pipes the host reads.
        capture_python_output()
    return asyncio.run(run_runner(bootstrap))


if __name__ == "__main__":
    sys.exit(main())
