"""What a runner gets of the host's environment (by default: the basics, never the host's
secrets), and a plugin's own interpreter and sys.path. Real runners, except the first tests."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host
from isoplug.host import SupervisorConfig
from isoplug.host.environment import runner_environment
from isoplug.host.manifest import ManifestError, load_manifest
from tests.plugins_fixtures import FAST, FIXTURES, copy_plugins, plugins_dir
from tests.venvs import make_venv

HOST_ENVIRONMENT = {
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "LC_TIME": "de_DE",
    "DATABASE_PASSWORD": "hunter2",
    "AWS_SECRET_ACCESS_KEY": "k",
    "ISOPLUG_TEST_ALLOWED_ONE": "1",
}


async def facts_of(directory: Path, config: SupervisorConfig = FAST) -> dict[str, Any]:
    """What the envreader plugin's runner reports about itself, in a host over ``directory``."""
    async with Host(directory, config=config) as host:
        await host.wait_ready(30)
        facts: dict[str, Any] = await host.call("envreader", "facts")
    return facts


def with_interpreter(manifest: Path, python: str) -> None:
    manifest.write_text(
        manifest.read_text().replace("[environment]", f'python = "{python}"\n[environment]')
    )


def test_by_default_only_the_basics_pass() -> None:
    manifest = load_manifest(FIXTURES / "echo")
    env = runner_environment([manifest], host_environment=HOST_ENVIRONMENT)
    assert env["PATH"] == "/usr/bin" and env["LANG"] == "C.UTF-8" and env["LC_TIME"] == "de_DE"
    assert "DATABASE_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PYTHONUNBUFFERED"] == "1"


def test_allow_lists_of_the_manifest_and_the_host_add_to_the_basics() -> None:
    manifest = load_manifest(FIXTURES / "envreader")
    env = runner_environment([manifest], ("AWS_*",), host_environment=HOST_ENVIRONMENT)
    assert env["ISOPLUG_TEST_ALLOWED_ONE"] == "1"  # the manifest's pattern
    assert env["AWS_SECRET_ACCESS_KEY"] == "k"  # the host's
    assert env["ISOPLUG_TEST_SET_BY_MANIFEST"] == "yes"  # [environment]
    assert "DATABASE_PASSWORD" not in env


def test_true_passes_everything() -> None:
    manifest = load_manifest(FIXTURES / "echo")
    env = runner_environment([manifest], True, host_environment=HOST_ENVIRONMENT)
    assert env["DATABASE_PASSWORD"] == "hunter2"


async def test_a_host_secret_never_reaches_a_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISOPLUG_TEST_SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("ISOPLUG_TEST_ALLOWED_COLOUR", "blue")
    facts = await facts_of(plugins_dir(tmp_path, "envreader"))
    environ = facts["environ"]
    assert "ISOPLUG_TEST_SECRET_TOKEN" not in environ
    assert environ["ISOPLUG_TEST_ALLOWED_COLOUR"] == "blue"
    assert environ["ISOPLUG_TEST_SET_BY_MANIFEST"] == "yes"
    assert environ["PATH"] == os.environ["PATH"]
    assert facts["helper"] == "from lib"  # sys_path


async def test_the_documented_opt_out_passes_the_whole_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISOPLUG_TEST_SECRET_TOKEN", "s3cret")
    config = SupervisorConfig(**{**FAST.__dict__, "inherit_environment": True})
    facts = await facts_of(plugins_dir(tmp_path, "envreader"), config)
    assert facts["environ"]["ISOPLUG_TEST_SECRET_TOKEN"] == "s3cret"


async def test_a_plugin_names_its_own_interpreter(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "envreader")
    wrapper = directory / "envreader" / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\nISOPLUG_TEST_WRAPPED=1 exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    with_interpreter(directory / "envreader" / "plugin.toml", "python-wrapper")
    facts = await facts_of(directory)
    assert facts["environ"]["ISOPLUG_TEST_WRAPPED"] == "1"


async def test_a_plugin_names_a_virtual_environment(tmp_path: Path) -> None:
    directory = copy_plugins(tmp_path, "envreader")
    venv = directory / "envreader" / ".venv"
    site = make_venv(venv)
    # A venv that has isoplug's dependencies: this interpreter's, through a .pth file.
    paths = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "isoplug-test.pth").write_text("\n".join(sorted(paths)) + "\n")
    with_interpreter(directory / "envreader" / "plugin.toml", ".venv")
    facts = await facts_of(directory)
    assert Path(facts["prefix"]) == venv.absolute()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('python = "no-such-python-here"', "'no-such-python-here' is not on PATH"),
        ('python = "./missing/python"', "is not an executable file"),
        ('python = "lib"', "is a folder but not a virtual environment"),
        ('sys_path = ["nowhere"]', "field 'sys_path[0]': 'nowhere' is not a folder"),
        ("inherit_environment = [1]", "'inherit_environment[0]': must be a string, got int"),
        ('inherit_environment = "all"', "'inherit_environment': must be true or false or a list"),
    ],
)
def test_bad_interpreter_and_paths_are_named(tmp_path: Path, line: str, message: str) -> None:
    directory = copy_plugins(tmp_path, "envreader") / "envreader"
    manifest = directory / "plugin.toml"
    text = manifest.read_text().replace('sys_path = ["lib"]\n', "")
    text = text.replace('inherit_environment = ["ISOPLUG_TEST_ALLOWED_*"]\n', "")
    manifest.write_text(text.replace("[environment]", f"{line}\n\n[environment]"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(directory)
    assert message in str(caught.value)
