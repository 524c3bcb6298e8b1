"""Virtual environments for tests of plugins that name an interpreter of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
