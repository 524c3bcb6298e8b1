"""Runners, log senders and plugin interpreters on another isoplug than the host's: real hosts,
real runner processes. Another isoplug is this one with a version or protocol range set in the
child before it imports anything else (a ``sitecustomize`` on the ``PYTHONPATH`` of a plugin's
``python`` wrapper, or a ``-c`` prologue): a real process speaking a real other version.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import isoplug
from isoplug import Host, PluginFailed, PluginState
from isoplug.errors import ConnectionBroken
from isoplug.logs import LogReceiver
from isoplug.testing import FAST, eventually, watching

PLUGIN = """
import os
import isoplug

class Plugin(isoplug.Plugin):
    @isoplug.method
    def mark(self) -> str:
        return getattr(isoplug, "UPGRADE_MARK", "old")

    @isoplug.method
    def crash(self) -> None:
        os._exit(3)
"""

#: What the child runs first: isoplug set to another version.
PATCH_VERSION = """
import isoplug, isoplug.release
isoplug.__version__ = isoplug.release.VERSION = {version!r}
"""
#: And to another protocol range (the wire package binds it as its connections' defaults).
PATCH_PROTOCOL = """
import isoplug.wire.connection as connection, isoplug.wire.messages as messages
messages.MIN_PROTOCOL_VERSION = messages.MAX_PROTOCOL_VERSION = {protocol!r}
messages.PROTOCOL_VERSION = {protocol!r}
defaults = connection.Connection.__init__.__kwdefaults__
defaults["min_version"] = defaults["max_version"] = {protocol!r}
"""


def patch(version: str, protocol: int | None) -> str:
    """The child's prologue: isoplug says it is ``version``, speaks ``protocol`` if given."""
    text = PATCH_VERSION.format(version=version)
    return text if protocol is None else text + PATCH_PROTOCOL.format(protocol=protocol)


def write_plugin(plugins: Path, plugin_id: str, extra: str = "") -> None:
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    (folder / f"{plugin_id}_plugin.py").write_text(PLUGIN)
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{plugin_id}_plugin:Plugin"\n{extra}\n'
    )


def python_with_path(tmp_path: Path, folder: Path) -> Path:
    """A `python` for a plugin: this interpreter, with ``folder`` first on its path."""
    folder.mkdir(exist_ok=True)
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{folder}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def other_isoplug(tmp_path: Path, version: str, protocol: int | None) -> Path:
    """A `python` whose isoplug says it is ``version`` and speaks ``protocol`` (if given)."""
    folder = tmp_path / "other"
    python = python_with_path(tmp_path, folder)
    (folder / "sitecustomize.py").write_text(patch(version, protocol))
    return python


async def test_a_runner_sharing_no_protocol_version_fails_at_once_saying_why(
    tmp_path: Path,
) -> None:
    """isoplug upgraded under a running host to another protocol: the runner is refused at
    every start, so it is not restarted; its account names both isoplug versions and ranges
    and the fix, and the runner's own words name each side by its part, not inverted."""
    plugins = tmp_path / "plugins"
    python = other_isoplug(tmp_path, "9.0", 2)
    write_plugin(plugins, "newer", f'python = "{python}"')
    with watching("plugin.newer") as runner_said:
        async with Host(plugins, config=FAST) as host:
            with pytest.raises(PluginFailed):
                await host.wait_ready(60)
            info = host.plugin("newer")
            assert info.state is PluginState.FAILED
            assert info.restarts == 0
            error = info.error or ""
            assert info.last_exit is not None
            account = info.last_exit.describe()
    ours = isoplug.__version__
    # The account says why in the host's words (its stderr only repeats the refusal).
    assert "it exited before reporting ready; its isoplug shares no protocol version" in account
    assert "its stderr ended with" not in account, account
    assert (
        f"the runner speaks protocol versions 2..2 (isoplug 9.0), the host 1..1 (isoplug {ours})"
    ) in error
    assert "Restart the host (every runner imports the isoplug installed where the host's" in (
        error
    )
    # The runner's stderr quotes the refusal: who speaks what, whoever quotes it.
    stderr = "\n".join(r.getMessage() for r in runner_said.records)
    assert f"the listener speaks protocol versions 1..1 (isoplug {ours}), the client 2..2" in (
        stderr
    ), stderr
    assert "this side speaks" not in stderr + error and "peer speaks" not in stderr + error


async def test_a_runner_on_another_compatible_isoplug_is_said_once_per_version(
    tmp_path: Path,
) -> None:
    """Runners that run an isoplug other than the host's (an upgrade under a running host)
    serve, and the difference is said once per version, at WARNING, with both versions."""
    plugins = tmp_path / "plugins"
    python = other_isoplug(tmp_path, "9.1", None)
    write_plugin(plugins, "one", f'python = "{python}"')
    write_plugin(plugins, "two", f'python = "{python}"')
    write_plugin(plugins, "same")
    with watching("isoplug.host") as records:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(60)
            await host.restart("one")
            await host.wait_ready(60)
    said = [
        r
        for r in records.records
        if r.levelno == logging.WARNING and "runs isoplug 9.1" in r.getMessage()
    ]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert f"the host isoplug {isoplug.__version__}" in said[0].getMessage()
    assert not any("runner same runs isoplug" in r.getMessage() for r in records.records)


async def test_an_interpreter_whose_packages_broke_after_its_check_fails_with_the_check(
    tmp_path: Path,
) -> None:
    """A plugin's python passed its check, then lost msgspec (the file unchanged): the restart
    that fails to import it gets the check again, and the plugin fails at once with its one
    clear message, not a crash loop of tracebacks."""
    plugins = tmp_path / "plugins"
    folder = tmp_path / "extra"
    python = python_with_path(tmp_path, folder)
    write_plugin(plugins, "fragile", f'python = "{python}"')
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(60)
        broken = folder / "msgspec"
        broken.mkdir()
        (broken / "__init__.py").write_text(
            'raise ModuleNotFoundError("No module named \'msgspec\'", name="msgspec")\n'
        )
        with pytest.raises(ConnectionBroken):
            await host.call("fragile", "crash")
        await eventually(lambda: host.plugin("fragile").state is PluginState.FAILED, 60)
        info = host.plugin("fragile")
    error = info.error or ""
    assert info.restarts == 1
    assert "but cannot import msgspec" in error
    assert "Traceback" not in error


SENDER = """
import json, sys
{patch}
import isoplug
from isoplug.errors import IsoplugError, VersionMismatch
try:
    from isoplug.logs import forward_logs
    forward_logs(sys.argv[1], sys.argv[2])
except IsoplugError as exc:
    print(json.dumps({{
        "type": type(exc).__name__,
        "mismatch": isinstance(exc, VersionMismatch),
        "cause": type(exc.__cause__).__name__,
        "text": str(exc),
    }}))
"""


async def test_forwarding_to_a_receiver_of_another_protocol_raises_version_mismatch(
    tmp_path: Path,
) -> None:
    """forward_logs() speaking a protocol the receiver does not: a VersionMismatch (an
    IsoplugError, as before) whose cause is the handshake's, naming each side by its part."""
    script = tmp_path / "sender.py"
    script.write_text(SENDER.format(patch=patch("9.2", 2)))
    async with LogReceiver() as receiver:
        result = await _run(
            [sys.executable, str(script), receiver.address, receiver.token], dict(os.environ)
        )
    said = json.loads((result.stdout.strip().splitlines() or [result.stderr])[-1])
    assert said["mismatch"] and said["type"] == "VersionMismatch", said
    assert said["cause"] == "VersionMismatch"
    ours = isoplug.__version__
    assert (
        f"the listener speaks protocol versions 1..1 (isoplug {ours}), the client 2..2 "
        "(isoplug 9.2); install one isoplug version on both sides"
    ) in said["text"]


async def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )


HOST_SCRIPT = """
import asyncio, pathlib, shutil, sys
import isoplug
from isoplug.testing import FAST

lib, new, plugins = (pathlib.Path(p) for p in sys.argv[1:])

async def main():
    async with isoplug.Host(plugins, config=FAST) as host:
        await host.wait_ready(60)
        before = await host.call("forked", "mark")
        shutil.rmtree(lib / "isoplug")
        shutil.copytree(new, lib / "isoplug")
        try:
            await host.call("forked", "crash")
        except isoplug.errors.ConnectionBroken:
            pass
        while True:
            try:
                after = await host.call("forked", "mark")
                break
            except isoplug.errors.IsoplugError:
                await asyncio.sleep(0.05)  # restarting: asked again until it serves
        print(before, after)

asyncio.run(main())
"""


@pytest.mark.slow
def test_isoplug_replaced_on_pythonpath_reaches_a_restarted_forked_runner(
    tmp_path: Path,
) -> None:
    """isoplug imported from a PYTHONPATH folder, replaced there while the host runs: a forked
    runner restarted since runs the new copy, as a spawned one would."""
    source = Path(isoplug.__file__).parent
    ignore = shutil.ignore_patterns("__pycache__")
    lib = tmp_path / "lib"
    shutil.copytree(source, lib / "isoplug", ignore=ignore)
    new = tmp_path / "new"
    shutil.copytree(source, new, ignore=ignore)
    with (new / "__init__.py").open("a") as init:
        init.write('\nUPGRADE_MARK = "new"\n')
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "forked")
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST_SCRIPT))
    env = dict(os.environ, PYTHONPATH=str(lib))
    result = subprocess.run(
        [sys.executable, str(script), str(lib), str(new), str(plugins)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["old", "new"], result.stderr[-3000:]
