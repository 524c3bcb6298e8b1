"""Where a plugin's code waits or failed is named by its first frame outside the standard
library, also in a virtual environment, whose own ``lib/pythonX.Y`` (sysconfig's
``platstdlib``) holds the installed packages: isoplug's example plugins, and a plugin's
libraries, installed with pip."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

from tests.processes import child_env
from tests.venvs import make_venv

_WHERE_IT_WAITS = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import waiting_lib
from isoplug.runner.health import describe_frame
from isoplug.stdlib_paths import in_stdlib
frame = waiting_lib.frame_here()
print(describe_frame(frame))
print(in_stdlib(threading.__file__), in_stdlib(waiting_lib.__file__))
"""


def test_a_frame_in_a_venvs_installed_package_is_not_the_standard_librarys(
    tmp_path: Path,
) -> None:
    site_packages = make_venv(tmp_path / "venv")
    (site_packages / "waiting_lib.py").write_text(
        "import sys\n\ndef frame_here():\n    return sys._getframe()\n"
    )
    env = child_env()
    # isoplug's dependencies (msgspec) from this interpreter's packages, after the checkout.
    env["PYTHONPATH"] += os.pathsep + sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "python"), "-c", _WHERE_IT_WAITS, str(site_packages)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    where, verdicts = result.stdout.splitlines()
    assert where == f"{site_packages / 'waiting_lib.py'}:4 in frame_here", where
    assert verdicts == "True False"
