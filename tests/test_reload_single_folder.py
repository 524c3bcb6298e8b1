"""``isoplug run --reload PLUGIN_FOLDER``: one plugin's folder, as ``isoplug new`` tells its
author to run it, reloads as the same plugin in a plugins folder does. The CLI runs it from a
scratch folder (in ``$TMPDIR``) holding a link to it, and watches both; inotify reports a
save under whichever of the two paths it was watched by last, by name order: each test runs
with the scratch folder before the plugin's and after it."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.processes import child_env
from tests.test_cli_exits import cli, write_plugin

pytest.importorskip("watchfiles")

#: Says which code and which manifest it was started from.
VERSIONED = """
    import tomllib
    from pathlib import Path

    import isoplug


    class P(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            manifest = tomllib.loads(Path(__file__).with_name("plugin.toml").read_text())
            ctx.logger.info("code %s, manifest version %s", CODE, manifest["version"])


    CODE = "one"
"""


@pytest.fixture(params=["a-tmp", "z-tmp"])
def scratch_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment, its ``$TMPDIR`` named before or after the ``m-plugins``
    folder the tests make their plugin in."""
    scratch = tmp_path / request.param
    scratch.mkdir()
    return child_env(NO_COLOR="1", TMPDIR=str(scratch))


#: A half-written edit: does not compile.
SYNTAX_ERROR = """
    import isoplug


    class P(isoplug.Plugin)
        pass
"""


def solo(tmp_path: Path, code: str) -> Path:
    """The folder of the plugin ``solo`` running ``code``, in ``m-plugins`` (see
    :func:`scratch_env`)."""
    write_plugin(tmp_path / "m-plugins", "solo", code)
    return tmp_path / "m-plugins" / "solo"


async def test_saved_code_and_manifest_restart_the_plugin(
    tmp_path: Path, scratch_env: dict[str, str]
) -> None:
    folder = solo(tmp_path, VERSIONED)
    async with cli("run", "--reload", str(folder), env=scratch_env) as run:
        watched = await run.until(r"reload: watching (.*) for changes")
        await run.until(r"code one, manifest version 1")
        code = folder / "solo_plugin.py"
        code.write_text(code.read_text().replace('CODE = "one"', 'CODE = "two"'))
        await run.until(rf"{re.escape(str(code))} changed; restarting runner solo")
        await run.until(r"code two, manifest version 1")
        manifest = folder / "plugin.toml"
        manifest.write_text(manifest.read_text().replace('version = "1"', 'version = "2"'))
        await run.until(r"a plugin.toml of runner solo changed; replacing it")
        await run.until(r"code two, manifest version 2")
        run.process.send_signal(signal.SIGINT)
        returncode, output, errors = await run.finish()
    # The folder the author named, not the scratch folder linking it.
    assert watched[1] == str(folder), output
    assert returncode == 0, output + errors


async def test_a_plugin_that_failed_to_compile_starts_once_fixed(
    tmp_path: Path, scratch_env: dict[str, str]
) -> None:
    folder = solo(tmp_path, SYNTAX_ERROR)
    async with cli("run", "--reload", str(folder), env=scratch_env) as run:
        await run.until(r"reload: watching")
        await run.until(r"plugin solo: failed")
        (folder / "solo_plugin.py").write_text(
            "import isoplug\n\n\nclass P(isoplug.Plugin):\n    pass\n"
        )
        await run.until(r"plugin solo: ready")
        run.process.send_signal(signal.SIGINT)
        returncode, output, errors = await run.finish()
    # Fixed before the end: the session ends well.
    assert returncode == 0, output + errors
