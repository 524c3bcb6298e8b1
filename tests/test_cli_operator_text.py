"""The commands quote the operator's own text (paths, ``--config`` keys, option values)
through the one sanitizer: a terminal escape in a folder's name or a ``--config`` key reaches
stderr or the console as an escape, never as the control character. Real ``isoplug``
subprocesses."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.plugins_fixtures import plugins_dir
from tests.test_cli_exits import cli, isoplug

ESC = "\x1b[31mred"
SHOWN = "\\x1b[31mred"


def test_a_missing_plugins_folder_is_named_escaped(tmp_path: Path) -> None:
    result = isoplug("run", str(tmp_path / ESC))
    assert result.returncode == 2
    assert f"{SHOWN} does not exist" in result.stderr
    assert "\x1b" not in result.stderr


def test_a_config_key_that_is_no_table_is_named_escaped(tmp_path: Path) -> None:
    overrides = tmp_path / f"{ESC}.toml"
    overrides.write_text('"\\u001b[31mevil" = 1\n')
    result = isoplug("run", "--config", str(overrides), str(plugins_dir(tmp_path, "echo")))
    assert result.returncode == 2
    assert f"--config {tmp_path}/{SHOWN}.toml: \\x1b[31mevil: expected one table" in (result.stderr)
    assert "\x1b" not in result.stderr


def test_other_commands_name_the_operators_paths_escaped(tmp_path: Path) -> None:
    (tmp_path / ESC / "taken").mkdir(parents=True)
    for arguments in (
        ("demo", "--plugins-dir", str(tmp_path / ESC / "missing")),
        ("schema", str(tmp_path / ESC / "missing")),
        ("new", str(tmp_path / ESC / "taken")),
    ):
        result = isoplug(*arguments)
        assert result.returncode == 2, arguments
        assert SHOWN in result.stderr and "\x1b" not in result.stderr, arguments
    made = isoplug("new", str(tmp_path / ESC / "weather_station"))
    assert made.returncode == 0, made.stderr
    assert SHOWN in made.stdout and "\x1b" not in made.stdout


#: A folder's name with a line break and a tab: what follows the break would read as a line
#: of its own (indented), the tab as columns.
BROKEN = "missing\nfake line\tcolumn"
BROKEN_SHOWN = "missing\\nfake line\\tcolumn"


def test_a_path_argument_is_shown_on_one_line(tmp_path: Path) -> None:
    """PATH, demo's --plugins-dir and --config, each holding a line break and a tab: the
    command's own message names each on one line, the break and the tab escaped."""
    for arguments, said in (
        (("run", str(tmp_path / BROKEN)), f"plugins directory {tmp_path}/{BROKEN_SHOWN} does"),
        (
            ("demo", "--plugins-dir", str(tmp_path / BROKEN)),
            f"plugins directory {tmp_path}/{BROKEN_SHOWN} does",
        ),
        (
            ("run", "--config", str(tmp_path / BROKEN), str(plugins_dir(tmp_path, "echo"))),
            f"--config {tmp_path}/{BROKEN_SHOWN}: ",
        ),
    ):
        result = isoplug(*arguments)
        assert result.returncode == 2, arguments
        assert said in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "\t" not in result.stderr, result.stderr


async def test_unknown_config_tables_are_named_escaped_on_the_console(tmp_path: Path) -> None:
    directory = plugins_dir(tmp_path, "echo")
    folder = tmp_path / ESC
    folder.mkdir()
    overrides = folder / "overrides.toml"
    overrides.write_text('["\\u001b[2Jnosuch"]\nx = 1\n')
    async with cli("run", "--config", str(overrides), str(directory)) as run:
        await run.until(r"no plugin has the id of table\(s\) \[\\x1b\[2Jnosuch\]")
        await run.until(r"running 1 plugin\(s\)")
        run.process.send_signal(signal.SIGINT)
        code, output, errors = await run.finish()
    assert code == 0, output + errors
    assert f"--config {folder.parent}/{SHOWN}/overrides.toml" in output
    assert "\x1b" not in output + errors


def test_unknown_arguments_are_named_escaped(tmp_path: Path) -> None:
    """argparse's own error path: an argument it does not know, at the top or in a
    subcommand."""
    for arguments in (
        ("run", str(tmp_path), f"extra{ESC}"),
        ("run", f"--bo{ESC}", str(tmp_path)),
        (f"no{ESC}such",),
    ):
        result = isoplug(*arguments)
        assert result.returncode == 2, arguments
        assert "error: " in result.stderr and SHOWN in result.stderr, result.stderr
        assert "\x1b" not in result.stderr, arguments
