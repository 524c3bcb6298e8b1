"""Other Pythons on this machine, for tests of plugins that run on an interpreter of their own:
the one an environment variable names (CI names its venvs: one that cannot serve is a failure),
else the first found on PATH or under ``~/.pyenv/versions``."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def other_python(minimum: tuple[int, int], variable: str) -> str | None:
    """An interpreter of Python ``minimum`` or newer that can run a runner (imports msgspec),
    or None."""
    named = os.environ.get(variable)
    if named:
        probe = _probe(named, minimum)
        if probe.returncode:
            pytest.fail(f"{variable}={named} cannot run a runner:\n{probe.stderr}")
        # A plugin.toml's relative python is its folder's: this one is the caller's.
        return os.path.abspath(named)
    major, minor = minimum
    candidates = [shutil.which(f"python{major}.{newer}") for newer in range(minor, 16)]
    candidates += sorted(
        path
        for path in glob.glob(str(Path.home() / f".pyenv/versions/{major}.*/bin/python"))
        if _minor_of(path) >= minor
    )
    for candidate in filter(None, candidates):
        if _probe(candidate, minimum).returncode == 0:
            return candidate
    return None


def _minor_of(python: str) -> int:
    """The minor version in a pyenv path (``.../versions/3.13.0/bin/python``)."""
    version = Path(python).parent.parent.name.split(".")
    return int(version[1]) if len(version) > 1 and version[1].isdigit() else -1


def _probe(python: str, minimum: tuple[int, int]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-c", f"import sys, msgspec; assert sys.version_info >= {minimum!r}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
