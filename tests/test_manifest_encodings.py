"""``plugin.toml`` and ``isoplug run --config`` files as editors in other languages save
them: UTF-16 or Latin-1 text, keys in other scripts, modules named in them. Each error says
what to change, in the editor's words (encoding, line and column), not a codec's."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from isoplug import Host
from isoplug.host.manifest import ManifestError, load_manifest
from isoplug.testing import watching
from tests.plugins_fixtures import FAST
from tests.processes import child_env

MINIMAL = 'id = "p"\nversion = "1"\nentry = "mod:Plugin"\n'
SAVE_AS_UTF8 = "save it as UTF-8"


def write_manifest(root: Path, raw: bytes) -> Path:
    directory = root / "p"
    directory.mkdir()
    (directory / "plugin.toml").write_bytes(raw)
    return directory


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # Windows Notepad's "Unicode", PowerShell 5's `>`: codecs put the byte order mark.
        (MINIMAL.encode("utf-16"), f"is saved as UTF-16, not UTF-8: {SAVE_AS_UTF8}"),
        (MINIMAL.encode("utf-32"), f"is saved as UTF-32, not UTF-8: {SAVE_AS_UTF8}"),
        (
            MINIMAL.encode("utf-16-le"),
            "is saved as UTF-16 or UTF-32 (a NUL byte beside each character), not UTF-8",
        ),
        (
            (MINIMAL + 'description = "Ünïcödé"\n').encode("latin-1"),
            "byte 0xdc at line 4, column 16 is not UTF-8",
        ),
        # The column counts characters: 'é' before the bad byte is one, not two bytes.
        (
            (MINIMAL + 'description = "é').encode() + b'\xe9"\n',
            "byte 0xe9 at line 4, column 17 is not UTF-8",
        ),
    ],
    ids=["utf16", "utf32", "utf16-no-bom", "latin1", "column-in-characters"],
)
def test_a_manifest_not_in_utf8_says_how_to_save_it(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_manifest(tmp_path, raw))
    assert message in str(caught.value)
    assert SAVE_AS_UTF8 in str(caught.value)
    assert "codec" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        (MINIMAL + 'clé = "x"\n', """the key 'clé' on line 4 holds characters other than"""),
        (MINIMAL + "[config]\n日本 = 1\n", """TOML allows only in a quoted key: "日本" = ..."""),
        (MINIMAL + "[émit]\nx = 1\n", """in a quoted key: ["émit"]"""),
        # Invisible: quoting would keep the zero-width space in the key.
        (MINIMAL.replace("version", "ve\u200brsion"), "invisible characters"),
    ],
    ids=["key", "key-in-table", "table-header", "zero-width-space"],
)
def test_a_bare_key_toml_needs_quoted_is_said_so(tmp_path: Path, text: str, hint: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_manifest(tmp_path, text.encode()))
    assert "is not valid TOML" in str(caught.value)
    assert hint in str(caught.value)


def test_a_quoted_key_in_another_script_is_read(tmp_path: Path) -> None:
    quoted = MINIMAL + '[config]\n"日本" = 1\n'
    manifest = load_manifest(write_manifest(tmp_path, quoted.encode()))
    assert manifest.config == {"日本": 1}


def test_an_entry_that_is_not_a_python_name_names_the_part(tmp_path: Path) -> None:
    text = MINIMAL.replace("mod:Plugin", "modul€:Plugin")
    with pytest.raises(ManifestError) as caught:
        load_manifest(write_manifest(tmp_path, text.encode()))
    assert "'modul€' is not a Python name" in str(caught.value)


async def test_a_plugin_whose_module_and_class_are_named_in_another_script_runs(
    tmp_path: Path,
) -> None:
    """Python imports ``modulé`` and finds ``Greeter_ü`` as ``import`` and ``getattr`` do;
    the manifest names them NFKC-normalized, as Python reads names in source (``ﬁ`` is
    ``fi``), so a ligature in the manifest finds the class its source spelled plainly."""
    plugins = tmp_path / "plugins"
    folder = plugins / "unicode"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        'id = "unicode"\nversion = "1"\nentry = "modulé:Greeter_ü\ufb01"\n', encoding="utf-8"
    )
    (folder / "modulé.py").write_text(
        "import isoplug\n"
        "class Greeter_üfi(isoplug.Plugin):\n"
        "    @isoplug.method\n"
        "    async def hello(self) -> str:\n"
        "        return __name__\n",
        encoding="utf-8",
    )
    with watching("isoplug") as records:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            assert await host.call("unicode", "hello") == "modulé"
    assert not [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]


def test_cli_config_saved_as_utf16_or_with_a_bare_key_says_the_fix(tmp_path: Path) -> None:
    """``--config`` goes through the same reader as ``plugin.toml``: exit 2 with the fix."""
    utf16 = tmp_path / "utf16.toml"
    utf16.write_bytes("[p]\nx = 1\n".encode("utf-16"))
    bare = tmp_path / "bare.toml"
    bare.write_text("[émit]\nx = 1\n", encoding="utf-8")
    for config, said in (
        (utf16, "is saved as UTF-16, not UTF-8: save it as UTF-8"),
        (bare, 'TOML allows only in a quoted key: ["émit"]'),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "isoplug", "run", "--config", str(config), str(tmp_path)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=child_env(PYTHONIOENCODING="utf-8"),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert f"isoplug run: --config {config}: " in result.stderr
        assert said in result.stderr
