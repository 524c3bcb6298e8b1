"""``isoplug schema PLUGIN_DIR`` and ``isoplug run --config FILE``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.plugins_fixtures import FIXTURES


def isoplug(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isoplug", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_schema_covers_the_manifest_and_the_plugins_config() -> None:
    result = isoplug("schema", str(FIXTURES / "configured"))
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    definitions = schema["$defs"]
    root = definitions[schema["$ref"].rpartition("/")[2]]
    assert {"id", "version", "entry", "restart", "config"} <= set(root["properties"])
    assert root["additionalProperties"] is False
    settings = definitions[root["properties"]["config"]["$ref"].rpartition("/")[2]]
    assert settings["required"] == ["greeting"]
    limits = definitions[settings["properties"]["limits"]["$ref"].rpartition("/")[2]]
    assert limits["properties"]["retries"]["type"] == "integer"


def test_schema_of_a_plugin_without_config_schema_leaves_config_open() -> None:
    result = isoplug("schema", str(FIXTURES / "echo"))
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    root = schema["$defs"][schema["$ref"].rpartition("/")[2]]
    assert root["properties"]["config"]["type"] == "object"


def test_schema_says_why_it_cannot_read_a_plugin() -> None:
    result = isoplug("schema", str(FIXTURES / "import_raises"))
    assert result.returncode == 2
    assert "could not be imported" in result.stderr
    result = isoplug("schema", str(FIXTURES / "unknown_field"))
    assert result.returncode == 2 and "unknown field" in result.stderr


def test_run_config_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "overrides.toml"
    bad.write_text("greeting = 'Hi'\n")
    result = isoplug("run", "--config", str(bad), str(FIXTURES / "configured"))
    assert result.returncode == 2
    assert "expected one table per plugin id" in result.stderr
    result = isoplug("run", "--config", str(tmp_path / "missing.toml"), str(FIXTURES / "echo"))
    assert result.returncode == 2 and "missing.toml" in result.stderr
