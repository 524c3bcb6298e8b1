"""Virtual environments for tests of plugins that name an interpreter of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType


def clean_env() -> dict[str, str]:
    """This process's environment without what would make a child import this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def make_venv(where: Path) -> Path:
    """A venv without pip (fast, offline); its site-packages folder."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)],
        check=True,
        timeout=120,
        env=clean_env(),
    )
    site = subprocess.run(
        [
            str(where / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    ).stdout.strip()
    return Path(site)


def install_copy(package: ModuleType, site: Path) -> None:
    """Install ``package`` into ``site`` as pip would lay it out (a folder of its own)."""
    source = Path(package.__file__ or "").parent
    shutil.copytree(source, site / source.name, ignore=shutil.ignore_patterns("__pycache__"))


def run_in_venv(
    venv: Path, script: Path, *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``script`` run by ``venv``'s python in ``cwd``, in :func:`clean_env` with ``env`` added;
    its output, as text."""
    return subprocess.run(
        [str(venv / "bin" / "python"), str(script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**clean_env(), **(env or {})},
    )
