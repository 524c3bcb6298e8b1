"""The environment of a test's subprocess: the isoplug this test imported (a worktree's, a
checkout's), never another one installed, and this checkout's ``tests`` package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import isoplug

#: The checkout: where ``tests`` is.
ROOT = Path(__file__).parent.parent
#: Where the isoplug this test imported is.
SOURCES = Path(isoplug.__file__).parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` for a subprocess, with ``extra``, whose ``PYTHONPATH`` puts this test's
    isoplug and ``tests`` first (the rest of the caller's ``PYTHONPATH`` after them)."""
    path = [str(SOURCES), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


def run_python(
    source: str, *arguments: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """This interpreter running ``source`` (``-c``) with ``arguments``, in :func:`child_env`;
    its output captured as text, whatever its exit code."""
    return run_interpreter("-c", source, *arguments, timeout=timeout)


def run_interpreter(
    *arguments: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """This interpreter with ``arguments`` (``-m pytest ...``), in :func:`child_env`; its
    output captured as text, whatever its exit code."""
    return subprocess.run(
        [sys.executable, *arguments],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(),
        timeout=timeout,
    )
