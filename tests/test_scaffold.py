"""``isoplug new NAME``: the names it refuses (its plugin's own test would fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug.cli import main
from tests.processes import run_interpreter


@pytest.mark.parametrize("name", ["os", "logging", "json", "isoplug", "msgspec", "pytest"])
def test_new_refuses_a_name_that_is_already_a_module(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", str(tmp_path / name)]) == 2
    error = capsys.readouterr().err
    assert f"a module {name!r} is already importable here" in error
    assert f"'{name}_plugin'" in error
    assert not (tmp_path / name).exists()


def test_new_does_not_count_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder of that name where the command runs is not on a runner's sys.path.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "weather_station.py").write_text("")
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    monkeypatch.syspath_prepend("")
    assert main(["new", str(tmp_path / "weather_station")]) == 0


def test_new_makes_missing_parent_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A newcomer's first command: `isoplug new plugs/greeter` where `plugs` does not exist yet.
    monkeypatch.chdir(tmp_path)
    assert main(["new", "plugs/greeter"]) == 0
    assert (tmp_path / "plugs" / "greeter" / "plugin.toml").is_file()
    assert (tmp_path / "plugs" / "greeter" / "greeter.py").is_file()


def test_new_says_when_a_file_stands_where_a_folder_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plugs").write_text("not a folder")
    assert main(["new", str(tmp_path / "plugs" / "deeper" / "greeter")]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'plugs'} is a file, not a directory" in error
    assert (tmp_path / "plugs").read_text() == "not a folder"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("class", "it is a Python keyword"),
        ("None", "it is a Python keyword"),
        ("async", "it is a Python keyword"),
        ("p" * 70, "it has 70 characters, at most 64"),
        ("_private", "use an ASCII letter, then ASCII letters, digits or '_'"),
        ("9lives", "use an ASCII letter, then ASCII letters, digits or '_'"),
        ("é_name", "use an ASCII letter, then ASCII letters, digits or '_'"),
    ],
)
def test_new_says_why_a_name_is_refused(
    tmp_path: Path, name: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", str(tmp_path / name)]) == 2
    assert f"{name!r} cannot name a plugin: {why} (it is the plugin id" in capsys.readouterr().err
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    ("name", "example"),
    [
        ("my-plugin", "'my_plugin'"),
        ("weather-report-2", "'weather_report_2'"),
        ("a.b", "'weather_report'"),
    ],
)
def test_new_suggests_the_name_with_underscores_for_dashes(
    tmp_path: Path, name: str, example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dash is the usual slip (a package's name on PyPI); other names get a stock example."""
    assert main(["new", str(tmp_path / name)]) == 2
    assert capsys.readouterr().err.rstrip().endswith(f"module name), e.g. {example}")


def test_new_with_an_empty_name_says_it_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", ""]) == 2
    assert "isoplug new: the plugin's name is empty: give it" in capsys.readouterr().err


def test_new_in_the_current_folder_asks_for_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    """``isoplug new .`` names a folder that is there, not a new plugin's."""
    assert main(["new", "."]) == 2
    assert "'.' names no new folder: give the plugin's name" in capsys.readouterr().err


def test_new_quotes_the_paths_of_the_commands_it_suggests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder with a space: the suggested commands run as printed, pasted into a shell."""
    folder = tmp_path / "dir with space" / "weather"
    assert main(["new", str(folder)]) == 0
    said = capsys.readouterr().out
    assert f"  isoplug run '{folder}'\n  python -m pytest '{folder}'\n" in said


def test_new_writes_code_and_a_test_that_pass_mypy_strict(tmp_path: Path) -> None:
    # isoplug is typed (py.typed): a user's `mypy --strict` should pass on what it writes,
    # the isoplug_host parameter of its test too.
    assert main(["new", str(tmp_path / "greeter")]) == 0
    cache = str(tmp_path / "cache")
    result = run_interpreter(
        "-m", "mypy", "--strict", "--cache-dir", cache, "greeter", cwd=tmp_path, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
