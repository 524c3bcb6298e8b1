"""How TOML dates and times reach a plugin without a schema, as docs/plugins.md says: as
objects only where msgpack carries them (a moment in time), else as ISO 8601 text."""

from __future__ import annotations

import datetime
from pathlib import Path

from isoplug import Host
from tests.plugins_fixtures import FAST

KINDS_PLUGIN = """\
import isoplug


class Kinds(isoplug.Plugin):
    async def setup(self, ctx):
        self.ctx = ctx

    @isoplug.method
    async def kinds(self):
        return {key: [type(value).__name__, str(value)] for key, value in self.ctx.config.items()}
"""


async def test_dates_and_times_without_a_schema_arrive_as_documented(tmp_path: Path) -> None:
    folder = tmp_path / "kinds"
    folder.mkdir()
    (folder / "plugin.toml").write_text(
        'id = "kinds"\nversion = "1"\nentry = "kinds:Kinds"\n[config]\n'
        "offset = 1979-05-27T07:32:00-07:00\nlocal = 1979-05-27T07:32:00\n"
        "day = 1979-05-27\nclock = 07:32:00\n"
    )
    (folder / "kinds.py").write_text(KINDS_PLUGIN)
    async with Host(tmp_path, config=FAST) as host:
        await host.wait_ready(30)
        assert await host.call("kinds", "kinds") == {
            # A moment: the offset written is not kept.
            "offset": ["datetime", "1979-05-27 14:32:00+00:00"],
            "local": ["str", "1979-05-27T07:32:00"],
            "day": ["str", "1979-05-27"],
            "clock": ["str", "07:32:00"],
        }
        await host.set_config(
            "kinds",
            {"day": datetime.date(2020, 1, 2), "local": datetime.datetime(2020, 1, 2, 3, 4)},
        )
        await host.wait_ready(30)
        kinds = await host.call("kinds", "kinds")
    assert kinds["day"] == ["str", "2020-01-02"]
    assert kinds["local"] == ["str", "2020-01-02T03:04:00"]
