"""Plugins a test writes on the spot to ask its runner what it has (its environment, flags,
hash seed...), and what the test compares their answers with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def write_probe(plugins: Path, plugin_id: str, source: str, manifest: str = "") -> None:
    """A plugin ``plugin_id`` in ``plugins`` whose ``probe.py`` is ``source``, defining the
    plugin class ``Probe``; ``manifest``: more lines of its plugin.toml."""
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1.0"\nentry = "probe:Probe"\n{manifest}\n'
    )
    (folder / "probe.py").write_text(source)


def hash_under_seed(seed: str) -> int:
    """``hash("isoplug")`` in this interpreter started with ``PYTHONHASHSEED=seed``."""
    done = subprocess.run(
        [sys.executable, "-c", "print(hash('isoplug'))"],
        env=dict(os.environ, PYTHONHASHSEED=seed),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)
