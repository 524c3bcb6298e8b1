"""Hostile plugin folders: a manifest or a folder name that tries to forge log lines, to show raw
terminal escapes, or to exhaust the parser's stack. Each is skipped with one clear, sanitized
error, and the other plugins run. Real hosts and runners over folders written here."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from isoplug import Host
from isoplug.host.manifest import MAX_NESTING
from isoplug.testing import watching
from tests.plugins_fixtures import FAST

FORGED = "CRITICAL app.db: forged"
ESCAPES = "\x1b[2J\u202e"
#: A formatter of the usual shape: every record starts at column 0.
FORMATTER = logging.Formatter("%(levelname)s %(name)s: %(message)s")

PLUGIN_PY = """\
import isoplug

class P(isoplug.Plugin):
    async def setup(self, ctx):
        self.settings = ctx.config

    @isoplug.method
    async def config(self):
        return dict(self.settings)
"""


def write_plugin(root: Path, folder: str, plugin_id: str, extra: str = "") -> Path:
    directory = root / folder
    directory.mkdir(parents=True)
    manifest = f'id = "{plugin_id}"\nversion = "1"\nentry = "p:P"\n{extra}'
    (directory / "plugin.toml").write_text(manifest, encoding="utf-8")
    (directory / "p.py").write_text(PLUGIN_PY, encoding="utf-8")
    return directory


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_clean(text: str) -> None:
    """No raw control or bidi character, and no line but the first starts at column 0."""
    assert "\x1b" not in text and "\u202e" not in text, text
    assert not re.search(r"\n[^ \t]", text), text


async def run_host(plugins: Path) -> tuple[Host, list[str], Any]:
    """Start a host over ``plugins``; return it (stopped), its ERROR lines as a usual
    formatter prints them, and what the plugin ``good`` answered."""
    with watching("isoplug.host") as waiter:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            answer = await host.call("good", "config")
        lines = [FORMATTER.format(r) for r in waiter.records if r.levelno >= logging.ERROR]
    return host, lines, answer


async def test_text_from_a_manifest_is_sanitized_in_errors_and_log_lines(tmp_path: Path) -> None:
    """Keys, values, resolved paths and msgspec's words about them cannot forge a log line."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "good", "good")
    escape = "\\u001b[2J\\u202e\\nCRITICAL app.db: forged"  # TOML escapes
    write_plugin(plugins, "unknown_key", "k", f'"k{escape}" = 1\n')
    write_plugin(plugins, "sys_path", "s", f'sys_path = ["nope{escape}"]\n')
    write_plugin(plugins, "environment", "e", f'[environment]\n"A{escape}" = 1\n')
    host, lines, _ = await run_host(plugins)
    assert len(host.problems) == 3 and len(lines) == 3
    for text in [*host.problems, *lines]:
        assert_clean(text)
    environment, sys_path, unknown = host.problems  # in folder order
    assert f"environment/plugin.toml: field 'environment.A\\x1b[2J\\u202e\\n{FORGED}'" in (
        environment
    )
    assert "sys_path/plugin.toml: field 'sys_path[0]': 'nope\\x1b[2J" in sys_path
    # The resolved folder, quoted raw before: escaped, its second line indented.
    assert (
        f"is not a folder ({(plugins / 'sys_path').resolve()}/nope\\x1b[2J\\u202e\n  {FORGED})"
        in sys_path
    )
    assert f"unknown_key/plugin.toml: unknown field 'k\\x1b[2J\\u202e\\n{FORGED}'" in unknown


async def test_a_plugin_folder_named_with_control_characters_is_skipped(tmp_path: Path) -> None:
    """Its path would be quoted wherever the host speaks of it: the folder is refused, and the
    error shows the name escaped."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "good", "good")
    write_plugin(plugins, f"x{ESCAPES}\n{FORGED}", "bad", 'capabilities = ["c"]\n')
    host, lines, _ = await run_host(plugins)
    assert [p.id for p in host.plugins()] == ["good"]
    assert len(host.problems) == 1 and len(lines) == 1
    for text in [*host.problems, *lines]:
        assert_clean(text)
    assert (
        f"the plugin's folder name 'x\\x1b[2J\\u202e\\n{FORGED}' holds control or invisible "
        "characters; rename the folder; plugin skipped"
    ) in host.problems[0]


async def test_a_plugin_folder_named_with_an_invisible_mark_is_skipped(tmp_path: Path) -> None:
    """A combining grapheme joiner or a Hangul filler is printable to Python but shows
    nothing: a folder named with one would read as another folder's name (`db` and
    `db\u034f`) wherever the host quotes its path; refused, the name escaped."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "db", "good")
    write_plugin(plugins, "db\u034f", "bad")
    write_plugin(plugins, "\u3164", "blank")
    host, _, _ = await run_host(plugins)
    assert [p.id for p in host.plugins()] == ["good"]
    for problem in host.problems:
        assert_clean(problem)
    problems = "\n".join(host.problems)
    for shown in ("'db\\u034f'", "'\\u3164'"):
        assert f"the plugin's folder name {shown} holds control or invisible characters" in (
            problems
        ), problems


async def test_deep_nesting_is_refused_and_the_other_plugins_run(tmp_path: Path) -> None:
    """Nesting the parser cannot read (it recursed out of stack), nesting it can but the limit
    refuses (named by its key path), dotted keys thousands deep and an integer TOML does not
    have: each plugin is skipped with an error, none stops the host or fails a supervisor."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "good", "good")
    write_plugin(plugins, "too_deep_to_parse", "a", f"[config]\nx = {nested_array(1000)}\n")
    write_plugin(plugins, "deep_array", "b", f"[config]\nx = {nested_array(MAX_NESTING)}\n")
    table = "{a = " * 3000 + "1" + "}" * 3000
    write_plugin(plugins, "deep_inline_table", "c", f"[config]\nx = {table}\n")
    write_plugin(plugins, "deep_dotted", "d", "[config]\n" + ".".join(["a"] * 6000) + " = 1\n")
    write_plugin(plugins, "huge_integer", "e", f"[config]\nx = {2**64}\n")
    host, lines, _ = await run_host(plugins)
    assert [p.id for p in host.plugins()] == ["good"]
    assert len(lines) == 5
    deep_array, dotted, inline, integer, unreadable = host.problems  # in folder order
    limit = f"nests tables and arrays more than {MAX_NESTING} levels deep; plugin skipped"
    assert f"deep_array/plugin.toml: field 'config.x[0][0][0][0][0][0]...': {limit}" in (deep_array)
    assert f"deep_dotted/plugin.toml: field 'config.a.a.a.a.a.a.a...': {limit}" in dotted
    too_deep = f"nests arrays or tables too deeply (the limit is {MAX_NESTING} levels)"
    assert f"deep_inline_table/plugin.toml: {too_deep}" in inline
    assert f"too_deep_to_parse/plugin.toml: {too_deep}" in unreadable
    assert "huge_integer/plugin.toml: field 'config.x': is an integer outside TOML's" in integer
    assert not any("supervisor" in line for line in lines)


async def test_a_config_at_the_limits_reaches_the_plugin_intact(tmp_path: Path) -> None:
    """The deepest nesting and the largest integers allowed are encoded to the runner and
    back: what discovery accepts, the supervisor can send."""
    plugins = tmp_path / "plugins"
    deepest = nested_array(MAX_NESTING - 1)  # [config] is level 1
    write_plugin(plugins, "good", "good", f"[config]\nx = {deepest}\nbig = {2**63 - 1}\n")
    host, lines, answer = await run_host(plugins)
    assert host.problems == [] and lines == []
    expected: list[Any] = []
    for _ in range(MAX_NESTING - 2):
        expected = [expected]
    assert answer == {"x": expected, "big": 2**63 - 1}


async def test_a_group_clash_on_an_odd_variable_name_is_sanitized(tmp_path: Path) -> None:
    """Problems found when grouping plugins quote the file's keys through the same sanitizer."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "good", "good")
    name = '"V\\u001b[2J\\nCRITICAL app.db: forged"'
    write_plugin(plugins, "g1", "g1", f'group = "g"\n[environment]\n{name} = "1"\n')
    write_plugin(plugins, "g2", "g2", f'group = "g"\n[environment]\n{name} = "2"\n')
    host, lines, _ = await run_host(plugins)
    assert [p.id for p in host.plugins()] == ["g1", "good"]
    assert len(host.problems) == 1 and len(lines) == 1
    assert_clean(lines[0])
    assert f"g2/plugin.toml: field 'environment.V\\x1b[2J\\n{FORGED}': differs" in lines[0]
