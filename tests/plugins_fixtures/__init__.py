"""Plugin directories for the runtime tests, and helpers to run a host over a few of them.

Each subdirectory is one plugin; a test links the ones it needs into a fresh plugins
directory, so that a host starts only those runners.
"""

from __future__ import annotations

import os
from pathlib import Path

from isoplug.host import SupervisorConfig

FIXTURES = Path(__file__).parent

#: Short timings so that hangs and crash loops are detected within a second or two. The
#: health timeout stays at 1 s: a ping is answered in microseconds, but a 2-core machine
#: starting several Python processes can stall a runner for a few hundred milliseconds.
FAST = SupervisorConfig(
    ready_timeout=15.0,
    health_interval=0.2,
    health_timeout=1.0,
    shutdown_timeout=3.0,
    teardown_timeout=1.0,
    terminate_timeout=1.0,
    call_timeout=15.0,
)


def plugins_dir(tmp_path: Path, *names: str) -> Path:
    """A plugins directory holding (links to) the fixture plugins ``names``."""
    directory = tmp_path / "plugins"
    directory.mkdir(exist_ok=True)
    for name in names:
        os.symlink(FIXTURES / name, directory / name)
    return directory


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for an absent init to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
