"""What is installed into the interpreter's site-packages while the host runs reaches the
runners forked afterwards as it reaches spawned ones: the zygote, whose ``sys.path`` and
imported libraries are those of its start, is replaced by a new one, and ends with its last
runner (isoplug.host.site_stamps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

import isoplug
from isoplug.host.site_stamps import SiteStamp
from isoplug.host.zygote import fork_supported
from tests.venvs import clean_env, make_venv

pytestmark = pytest.mark.skipif(not fork_supported(), reason="runners are spawned here")

PROBE = """
import os
import sys

import isoplug


class Probe(isoplug.Plugin):
    @isoplug.method
    def look(self) -> dict:
        import msgspec

        try:
            import sitelib

            found = sitelib.WHO
        except ImportError as exc:
            found = f"ImportError: {exc}"
        upgraded = getattr(msgspec, "UPGRADED", False)
        return {"sitelib": found, "upgraded": upgraded, "path": sys.path, "parent": os.getppid()}
"""

#: Run by the venv's python: a host over a forked plugin and a spawned one, which look at
#: what they have after each change to the venv's site-packages and a restart.
HOST_SCRIPT = """
import asyncio, json, os, shutil, sys
from pathlib import Path

import isoplug

plugins, site, library, shared = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
if shared == "shared":
    from isoplug.testing import share_zygotes

    share_zygotes()


async def look(host):
    for plugin_id in ("forked", "spawned"):
        await host.restart(plugin_id)
    return {p: await host.call(p, "look") for p in ("forked", "spawned")}


async def gone(pid):
    while os.path.exists(f"/proc/{pid}"):
        await asyncio.sleep(0.02)


async def main():
    async with isoplug.Host(plugins) as host:
        await host.wait_ready(timeout=60)
        seen = {"host": os.getpid(), "before": await look(host)}
        # pip install -e: a .pth file naming the library's folder.
        (site / "sitelib-editable.pth").write_text(library + "\\n")
        seen["installed"] = await look(host)
        # pip install -U of a library the zygote imported: its folder replaced by a new one.
        staged = site / ".msgspec-new"
        shutil.copytree(site / "msgspec", staged)
        with open(staged / "__init__.py", "a") as init:
            init.write("\\nUPGRADED = True\\n")
        shutil.rmtree(site / "msgspec")
        staged.rename(site / "msgspec")
        seen["upgraded"] = await look(host)
        # The replaced zygotes end with their last runners, which the restarts stopped.
        zygotes = {seen[s]["forked"]["parent"] for s in ("before", "installed")}
        zygotes.discard(seen["upgraded"]["forked"]["parent"])  # the one in use
        await asyncio.wait_for(asyncio.gather(*map(gone, zygotes)), 60)
    print(json.dumps(seen))


asyncio.run(main())
"""


@pytest.mark.parametrize("zygote", ["own", "shared"])
def test_a_library_installed_while_the_host_runs_reaches_forked_runners(
    tmp_path: Path, zygote: str
) -> None:
    """After a ``.pth`` file is added to site-packages (an editable install), a forked runner
    restarted has the ``sys.path`` a spawned one has, its order included, and imports the
    library; after a library the zygote had imported is upgraded, it has the new version. Each
    time from a new zygote; the old ones end once their runners have. The same for a zygote
    the hosts of a test session share (isoplug.host.zygote_pool)."""
    site = make_venv(tmp_path / "venv")
    # Installed as a wheel lays it out: a folder of its own, replaced whole by an upgrade.
    shutil.copytree(
        Path(msgspec.__file__).parent,
        site / "msgspec",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # isoplug itself from this checkout, as an editable install would have it.
    (site / "isoplug-checkout.pth").write_text(f"{Path(isoplug.__file__).parents[1]}\n")
    library = tmp_path / "library"
    (library / "sitelib").mkdir(parents=True)
    (library / "sitelib" / "__init__.py").write_text('WHO = "installed"\n')
    plugins = tmp_path / "plugins"
    for plugin_id, extra in (("forked", ""), ("spawned", 'start = "spawn"\n')):
        (plugins / plugin_id).mkdir(parents=True)
        (plugins / plugin_id / "probe.py").write_text(PROBE)
        (plugins / plugin_id / "plugin.toml").write_text(
            f'id = "{plugin_id}"\nversion = "1"\nentry = "probe:Probe"\n{extra}'
        )
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT)
    python = tmp_path / "venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), str(script), str(plugins), str(site), str(library), zygote],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    host = seen["host"]
    before, installed, upgraded = seen["before"], seen["installed"], seen["upgraded"]
    assert before["forked"]["sitelib"].startswith("ImportError")
    assert before["spawned"]["sitelib"].startswith("ImportError")
    for stage in (installed, upgraded):
        assert stage["spawned"]["parent"] == host
        assert stage["forked"]["sitelib"] == stage["spawned"]["sitelib"] == "installed"
        # Past each runner's own plugin folder, first.
        assert stage["forked"]["path"][1:] == stage["spawned"]["path"][1:]
        assert str(library) in stage["forked"]["path"]
    assert not installed["forked"]["upgraded"]
    assert upgraded["forked"]["upgraded"] and upgraded["spawned"]["upgraded"]
    zygotes = [stage["forked"]["parent"] for stage in (before, installed, upgraded)]
    assert host not in zygotes and len(set(zygotes)) == 3, zygotes


def test_a_site_stamp_tells_each_change_an_install_makes(tmp_path: Path) -> None:
    """A ``.pth`` file rewritten in place (its size unchanged), one added, a folder created
    where there was none: each is a change. A stamp taken right after a change is racy (a
    later change within the file system's time granularity would leave the times as they
    are), one of folders still for a while is not."""
    site = tmp_path / "site"
    site.mkdir()
    pth = site / "a.pth"
    pth.write_text("/one\n")
    missing = tmp_path / "user-site"
    folders = (str(site), str(missing))
    assert SiteStamp.take(folders).racy
    while_ago = time.time() - 60
    for path in (pth, site):
        os.utime(path, (while_ago, while_ago))
    stamp = SiteStamp.take(folders)
    assert not stamp.racy and stamp.changed() is None
    pth.write_text("/two\n")
    assert stamp.changed() == f"file {pth} changed"
    stamp = SiteStamp.take(folders)
    (site / "b.pth").write_text("/three\n")
    assert stamp.changed() == f"folder {site} changed"
    stamp = SiteStamp.take(folders)
    missing.mkdir()
    assert stamp.changed() == f"folder {missing} changed"
