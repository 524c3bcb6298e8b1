"""``isoplug new NAME``: the names it refuses (its plugin's own test would fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug.cli import main


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
