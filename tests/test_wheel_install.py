"""Acceptance: the wheel, installed into a fresh venv (its dependencies from the package index),
runs `isoplug demo` (the example plugins ship in it), `isoplug new` and the scaffold's own test
(through the pytest plugin the wheel registers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.wheel


def run(*command: str | Path, cwd: Path, timeout: float = 120) -> str:
    # Neither the checkout nor the dev venv may leak in: a clean environment, another cwd.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["NO_COLOR"] = "1"
    result = subprocess.run(
        [str(part) for part in command],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{output}"
    return output


def test_the_wheel_works_in_a_fresh_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT, cwd=tmp_path)
    (wheel,) = wheels.glob("isoplug-*.whl")
    # Without a pip of its own (installing one takes seconds): this pip installs into it.
    run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv", cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        wheel,
        "pytest",
        cwd=tmp_path,
    )
    work = tmp_path / "work"
    work.mkdir()
    where = run(python, "-c", "import isoplug; print(isoplug.__file__)", cwd=work)
    assert str(tmp_path / "venv") in where
    isoplug = tmp_path / "venv" / "bin" / "isoplug"
    demo = run(isoplug, "demo", "--duration", "1", cwd=work)
    assert "4 plugin(s) ready" in demo
    run(isoplug, "new", "greeter", cwd=work)
    tests = run(python, "-m", "pytest", "-q", "greeter", cwd=work)
    assert "2 passed" in tests
