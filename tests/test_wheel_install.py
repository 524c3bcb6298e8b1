"""Acceptance: the wheel, installed into a fresh venv (its dependencies from the package index),
runs `isoplug demo` (the example plugins ship in it), `isoplug new` and the scaffold's own test
(through the pytest plugin the wheel registers)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.wheel


def completed(*command: str | Path, cwd: Path, timeout: float) -> tuple[int, str]:
    """``command``'s exit code and output (stdout, then stderr)."""
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
    return result.returncode, result.stdout + result.stderr


def run(*command: str | Path, cwd: Path, timeout: float = 120) -> str:
    code, output = completed(*command, cwd=cwd, timeout=timeout)
    assert code == 0, f"{command} exited {code}:\n{output}"
    return output


def run_failing(*command: str | Path, cwd: Path, timeout: float = 120) -> str:
    """What ``command``, which must fail, said."""
    code, output = completed(*command, cwd=cwd, timeout=timeout)
    assert code != 0, f"{command} succeeded:\n{output}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once for the module's tests."""
    wheels = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT, cwd=wheels)
    (built,) = wheels.glob("isoplug-*.whl")
    return built


def fresh_venv(where: Path) -> Path:
    """A venv without a pip of its own (installing one takes seconds; this pip installs into
    it): its python."""
    run(sys.executable, "-m", "venv", "--without-pip", where, cwd=where.parent)
    return where / "bin" / "python"


def pip_install(python: Path, *requirements: str | Path) -> list[str | Path]:
    """The command that installs ``requirements`` into ``python``'s venv."""
    return [sys.executable, "-m", "pip", "--python", python, "install", "-q", *requirements]


def test_the_wheel_works_in_a_fresh_venv(tmp_path: Path, wheel: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    run(*pip_install(python, wheel, "pytest"), cwd=tmp_path)
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


def test_a_msgspec_that_corrupts_frames_is_refused(tmp_path: Path, wheel: Path) -> None:
    """msgspec 0.18 writes a frame's message over the length header reserved before it (see
    isoplug.wire.codec): pip will not pair the wheel with it, and forced to (``--no-deps``),
    importing isoplug's codec says what is wrong and how to fix it, instead of every peer
    refusing every frame as malformed."""
    python = fresh_venv(tmp_path / "venv")
    refused = run_failing(*pip_install(python, wheel, "msgspec==0.18.6"), cwd=tmp_path)
    assert "msgspec" in refused and "conflict" in refused, refused
    run(*pip_install(python, "--no-deps", wheel, "msgspec==0.18.6"), cwd=tmp_path)
    said = run_failing(python, "-c", "import isoplug.host", cwd=tmp_path)
    assert "isoplug needs msgspec >= 0.19.0, but msgspec 0.18.6 is installed" in said, said
    assert "pip install -U 'msgspec>=0.19'" in said, said


def test_the_metadata_says_linux_and_names_each_requirement_once(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    assert "Classifier: Operating System :: POSIX :: Linux" in metadata
    # A package an extra lists twice (once itself, once through isoplug[otel]) at two
    # minimums: the lower one says nothing true.
    listed = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)[^;\n]*(;.*)?$", metadata, re.M)
    twice = [entry for entry, count in Counter(listed).items() if count > 1]
    assert not twice, twice


def test_the_sdist_holds_what_builds_tests_and_documents_the_package(tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    run(*pip_install(python, "build"), cwd=tmp_path)
    run(python, "-m", "build", "-q", "--sdist", "-o", tmp_path / "dist", ROOT, cwd=tmp_path)
    (sdist,) = (tmp_path / "dist").glob("isoplug-*.tar.gz")
    with tarfile.open(sdist) as archive:
        tops = {member.split("/")[1] for member in archive.getnames() if "/" in member}
    assert {"src", "tests", "docs", "examples", "pyproject.toml", "README.md"} <= tops, tops
    assert ".ci" not in tops, tops  # the repository's CI entry point is no user's
