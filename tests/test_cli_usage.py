"""The command line's own words: usage errors said with their command's usage and the
user's text, a misspelled command's nearest, every exit code in run's help, CRITICAL as a
level, FORCE_COLOR, schema given a plugin.toml."""

from __future__ import annotations

import json
import re
from pathlib import Path

from isoplug.cli.parser import RUN_EXIT_CODES
from tests.plugins_fixtures import FIXTURES
from tests.processes import child_env
from tests.test_cli_exits import isoplug

ROOT = Path(__file__).parent.parent


def documented_exit_codes() -> set[int]:
    """The codes of the exit-code table of docs/operations.md's `isoplug run` section."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## `isoplug run`: output, levels and exit codes", 1)[1].split("\n## ")[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}


def test_run_help_lists_every_documented_exit_code() -> None:
    result = isoplug("run", "--help")
    said = " ".join(result.stdout.split())
    assert {code for code, _ in RUN_EXIT_CODES} == documented_exit_codes()
    for code, meaning in RUN_EXIT_CODES:
        assert f"{code} {' '.join(meaning.split())}" in said, code
    assert "71 the system refused the command something it needs: file descriptors" in said


def test_usage_errors_are_said_with_their_commands_usage_and_words(tmp_path: Path) -> None:
    second = isoplug("run", str(tmp_path), str(tmp_path))
    assert second.returncode == 2
    assert second.stderr.startswith("usage: isoplug run "), second.stderr
    assert f"isoplug run: error: unrecognized arguments: {tmp_path}" in second.stderr
    bogus = isoplug("run", "--log-level", "bogus", str(tmp_path))
    assert bogus.returncode == 2 and "'bogus'" in bogus.stderr and "BOGUS" not in bogus.stderr
    typo = isoplug("rn", str(tmp_path))
    assert typo.returncode == 2 and "did you mean 'run'?" in typo.stderr, typo.stderr
    for option in (["--plugins-dir", str(tmp_path)], ["--duration", "1"]):
        protocol = isoplug("demo", "--protocol", *option)
        assert protocol.returncode == 2, protocol.stdout
        assert f"--protocol shows one host and one runner of its own: it takes no {option[0]}" in (
            protocol.stderr
        )


def test_critical_is_a_level_as_in_a_manifest(tmp_path: Path) -> None:
    result = isoplug(
        "run", "--log-level", "critical", "--plugin-log-level", "CRITICAL", str(tmp_path / "x")
    )
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr


def test_schema_takes_a_plugin_toml_for_its_folder() -> None:
    result = isoplug("schema", str(FIXTURES / "configured" / "plugin.toml"))
    assert result.returncode == 0, result.stderr
    assert "$defs" in json.loads(result.stdout)


def test_force_color_colours_a_pipe_unless_no_color() -> None:
    environment = child_env(FORCE_COLOR="1", TERM="dumb")
    environment.pop("NO_COLOR", None)
    demo = ["demo", "--plugins-dir", str(FIXTURES / "echo"), "--duration", "0.5"]
    forced = isoplug(*demo, env=environment)
    assert forced.returncode == 0 and "\033[" in forced.stdout, forced.stdout
    plain = isoplug(*demo, env=dict(environment, NO_COLOR="1"))
    assert plain.returncode == 0 and "\033[" not in plain.stdout, plain.stdout
