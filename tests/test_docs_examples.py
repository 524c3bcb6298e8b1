"""The documentation's manifests work as written: every one in README.md, docs/*.md, the
manifest module's docstring and examples/plugins parses with the real loader (with its
commented-out settings too, uncommented). The other code blocks run in test_docs_code.py."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from isoplug.host import manifest as manifest_module
from isoplug.host.manifest import MANIFEST_NAME, load_manifest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: A commented-out setting, meant to be uncommented: ``# key = value`` or ``# [table]``.
_SETTING = re.compile(r"^# (\[[\w.-]+\]|[A-Za-z_][\w.-]*\s*=)")


def blocks(path: Path, language: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(path.read_text()) if m.group(1) == language]


def manifest_examples() -> list[tuple[str, str]]:
    examples = [
        (f"{path.name} toml block {index + 1}", text)
        for path in DOCS
        for index, text in enumerate(blocks(path, "toml"))
    ]
    # The manifest module's docstring: the indented block after "``plugin.toml``::".
    docstring = (manifest_module.__doc__ or "").partition("``plugin.toml``::\n")[2]
    lines = []
    for line in docstring.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    examples.append(("manifest.py docstring", textwrap.dedent("\n".join(lines))))
    for path in sorted((ROOT / "examples" / "plugins").glob(f"*/{MANIFEST_NAME}")):
        examples.append((str(path.relative_to(ROOT)), path.read_text()))
    return examples


def uncommented(text: str) -> str:
    return (
        "\n".join(line[2:] if _SETTING.match(line) else line for line in text.splitlines()) + "\n"
    )


def test_the_docs_hold_manifest_examples() -> None:
    """The extraction finds what it must check: a failure here means it checks nothing."""
    names = [name for name, _ in manifest_examples()]
    assert "README.md toml block 1" in names
    assert "manifest.py docstring" in names
    readme = dict(manifest_examples())["README.md toml block 1"]
    assert uncommented(readme) != readme  # it has commented-out settings
    assert "[restart]" in uncommented(readme)


@pytest.mark.parametrize(
    ("name", "text"), manifest_examples(), ids=[name for name, _ in manifest_examples()]
)
def test_every_manifest_example_parses(tmp_path: Path, name: str, text: str) -> None:
    """As written, and with every commented-out setting uncommented, the loader takes it
    (in a plugin folder that has what the examples name: a virtual environment, src/)."""
    interpreter = tmp_path / ".venv" / "bin" / "python"
    interpreter.parent.mkdir(parents=True)
    interpreter.write_text("#!/bin/sh\n")
    interpreter.chmod(0o755)
    (tmp_path / "src").mkdir()
    for variant in (text, uncommented(text)):
        (tmp_path / MANIFEST_NAME).write_text(variant)
        loaded = load_manifest(tmp_path)
        assert loaded.id and loaded.entry, name


def test_the_readme_manifest_says_what_it_seems_to() -> None:
    """The README's commented restart settings are the defaults they claim to be."""
    readme = dict(manifest_examples())["README.md toml block 1"]
    directory = Path("/nonexistent")
    restart = manifest_module.parse_manifest(
        tomllib.loads(uncommented(readme)), directory=directory, path=directory / MANIFEST_NAME
    ).restart
    assert restart == manifest_module.RestartPolicy()
