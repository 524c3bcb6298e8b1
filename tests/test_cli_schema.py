"""``isoplug schema PLUGIN_DIR``, ``isoplug run --config FILE`` and ``isoplug run PLUGIN_DIR``,
run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from isoplug.host.manifest import (
    MANIFEST_DESCRIPTION,
    ManifestError,
    load_manifest,
    manifest_schema,
    parse_manifest,
)
from isoplug.host.schema import SchemaUnavailable, plugin_toml_schema
from tests.plugins_fixtures import FIXTURES


def make_plugin(tmp_path: Path, code: str, manifest: str = "") -> Path:
    folder = tmp_path / "subject"
    folder.mkdir()
    (folder / "subject.py").write_text(code)
    (folder / "plugin.toml").write_text(
        f'id = "subject"\nversion = "1"\nentry = "subject:P"\n{manifest}'
    )
    return folder


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


def test_schema_closes_every_config_table_as_the_runner_validates_it(tmp_path: Path) -> None:
    """A schema that does not forbid unknown fields: the runner refuses a typo all the same,
    and so does the editor's schema."""
    folder = make_plugin(
        tmp_path,
        "import msgspec\nimport isoplug\n\nclass Inner(msgspec.Struct):\n    n: int = 1\n\n"
        "class C(msgspec.Struct):\n    inner: Inner | None = None\n\n"
        "class P(isoplug.Plugin):\n    config_schema = C\n",
    )
    result = isoplug("schema", str(folder))
    assert result.returncode == 0, result.stderr
    definitions = json.loads(result.stdout)["$defs"]
    assert definitions["config.C"]["additionalProperties"] is False
    assert definitions["config.Inner"]["additionalProperties"] is False


def test_schema_of_a_plugin_without_config_schema_leaves_config_open() -> None:
    result = isoplug("schema", str(FIXTURES / "echo"))
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    root = schema["$defs"][schema["$ref"].rpartition("/")[2]]
    assert root["properties"]["config"]["type"] == "object"


def test_schema_of_a_plugins_folder_names_a_plugin_folder_to_give() -> None:
    result = isoplug("schema", str(FIXTURES))
    assert result.returncode == 2 and result.stdout == ""
    assert "it is a plugins folder: give one plugin's folder, e.g. isoplug schema " in (
        result.stderr
    )


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


@pytest.mark.parametrize(
    ("code", "blamed"),
    [
        (
            "import msgspec\nimport isoplug\n\nclass C(msgspec.Struct):\n    n: int = 1\n\n"
            "class P(isoplug.Plugin):\n    config_schema = C\n",
            True,
        ),
        ("import isoplug\n\nclass P(isoplug.Plugin)\n    pass\n", False),
        # Words like a refused configuration's, from the plugin's own code: not the file's.
        ("raise RuntimeError(\"plugin 'subject': config server down\")\n", False),
    ],
    ids=["config refused", "syntax error", "config words in an import error"],
)
def test_run_says_a_config_error_may_come_from_the_config_file_only_for_one(
    tmp_path: Path, code: str, blamed: bool
) -> None:
    """A plugin failed for its configuration, merged with --config: the file is named as a
    place the error may come from; a plugin failed for anything else (its code) is not."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    make_plugin(plugins, code, '[restart]\npolicy = "never"\n')
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("[subject]\nn = 'not a number'\n")
    result = isoplug("run", "--config", str(overrides), str(plugins))
    assert result.returncode == 1, result.stderr
    said = "a config error may come from there" in result.stdout + result.stderr
    assert said is blamed, result.stdout


@pytest.mark.parametrize("declared", ["C", "42"])
def test_schema_refuses_a_config_schema_the_runner_refuses(tmp_path: Path, declared: str) -> None:
    folder = make_plugin(
        tmp_path,
        "import dataclasses\nimport isoplug\n\n@dataclasses.dataclass\nclass C:\n    n: int = 1\n"
        f"\nclass P(isoplug.Plugin):\n    config_schema = {declared}\n",
    )
    result = isoplug("schema", str(folder))
    assert result.returncode == 2 and result.stdout == ""
    shown = "<class 'subject.C'>" if declared == "C" else "42"
    assert result.stderr.strip() == (
        f"isoplug schema: plugin 'subject': config_schema must be a msgspec.Struct subclass, "
        f"got {shown}"
    )


def test_schema_gives_up_on_an_import_that_blocks(tmp_path: Path) -> None:
    folder = make_plugin(
        tmp_path, "import time\nimport isoplug\ntime.sleep(1000)\nclass P(isoplug.Plugin): ...\n"
    )
    with pytest.raises(SchemaUnavailable, match=r"did not finish importing within 0\.5 s"):
        plugin_toml_schema(load_manifest(folder), timeout=0.5)
    result = isoplug("schema", "--timeout", "0.5", str(folder))
    assert result.returncode == 2 and result.stdout == ""
    assert "did not finish importing within 0.5 s" in result.stderr, result.stderr
    refused = isoplug("schema", "--timeout", "0", str(folder))
    assert refused.returncode == 2 and "--timeout" in refused.stderr


def test_the_log_level_schema_accepts_what_the_manifest_accepts(tmp_path: Path) -> None:
    import re

    root = manifest_schema()["$defs"]["PluginToml"]["properties"]["log_level"]
    for level in ("INFO", "info", "Warning", "critical", "VERBOSE", "INFOS", ""):
        document = {"id": "a", "version": "1", "entry": "a:A", "log_level": level}
        try:
            parse_manifest(document, directory=tmp_path, path=tmp_path / "plugin.toml")
            accepted = True
        except ManifestError:
            accepted = False
        assert bool(re.fullmatch(root["pattern"], level)) is accepted, level


def test_run_of_one_plugin_folder_names_its_real_path_in_errors(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path, "", '[limits]\nmemory = "12 parsecs"\n')
    result = isoplug("run", str(folder))
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert f"{folder.resolve() / 'plugin.toml'}: field 'limits.memory'" in said
    assert "isoplug-plugin-" not in said


def test_schema_shows_what_a_plugin_says_as_escapes(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path, 'raise RuntimeError("x\\x1b[2J\\x1b]0;pwned\\x07 \\u202e")\n')
    result = isoplug("schema", str(folder))
    assert result.returncode == 2 and result.stdout == ""
    assert "could not be imported" in result.stderr
    assert not {"\x1b", "\x07", "\u202e"} & set(result.stderr), result.stderr
    assert "RuntimeError: x\\x1b[2J\\x1b]0;pwned\\x07 \\u202e" in result.stderr
    # No line of the plugin's text starts at column 0, where the command's own lines start.
    assert [line for line in result.stderr.splitlines() if not line.startswith(" ")] == [
        "isoplug schema: plugin 'subject' could not be imported:"
    ]


def test_schema_survives_a_plugin_writing_to_its_descriptors(tmp_path: Path) -> None:
    folder = make_plugin(
        tmp_path,
        "import os, sys, threading, msgspec, isoplug\n"
        "os.write(1, b'GARBAGE ON FD1\\n')\n"
        "os.write(2, b'\\x1b[31mGARBAGE ON FD2\\x1b[0m\\n')\n"
        "print('{\"fake\": true}')\n"
        "sys.stdout.flush()\n"
        "class S(msgspec.Struct):\n    n: int\n"
        "class P(isoplug.Plugin):\n    config_schema = S\n",
        "[config]\nn = 1\n",
    )
    result = isoplug("schema", str(folder))
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$defs"]["config.S"]["required"] == ["n"]
    assert result.stderr.splitlines() == [
        "isoplug schema: plugin 'subject' wrote this while it was imported (not part of the "
        "schema):",
        "  GARBAGE ON FD1",
        "  \\x1b[31mGARBAGE ON FD2\\x1b[0m",
        '  {"fake": true}',
    ]


def test_schema_names_a_config_field_json_schema_cannot_describe(tmp_path: Path) -> None:
    folder = make_plugin(
        tmp_path,
        "import typing, msgspec, isoplug\n"
        "class Inner(msgspec.Struct, frozen=True):\n    hook: typing.Callable = None\n"
        "class S(msgspec.Struct):\n    n: int = 0\n    inner: Inner = Inner()\n"
        "class P(isoplug.Plugin):\n    config_schema = S\n",
    )
    result = isoplug("schema", str(folder))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "isoplug schema: plugin 'subject': config field 'inner.hook' has type typing.Callable, "
        "which has no JSON Schema (type <class 'collections.abc.Callable'> is not supported); "
        "give it a type msgspec can describe, or annotate it with "
        "msgspec.Meta(extra_json_schema={...})"
    )
    assert "Traceback" not in result.stderr


def _accepted(tmp_path: Path, **fields: object) -> bool:
    document = {"id": "a", "version": "1", "entry": "a:A", **fields}
    try:
        parse_manifest(document, directory=tmp_path, path=tmp_path / "plugin.toml")
    except ManifestError:
        return False
    return True


def test_the_printed_schema_refuses_the_sizes_and_environments_the_manifest_refuses(
    tmp_path: Path,
) -> None:
    import re

    result = isoplug("schema", str(FIXTURES / "echo"))
    assert result.returncode == 0, result.stderr
    definitions = json.loads(result.stdout)["$defs"]
    memory = definitions["LimitsTable"]["properties"]["memory"]["anyOf"]
    assert {"type": "integer", "minimum": 1} in memory
    (text,) = [form for form in memory if form.get("type") == "string"]
    # Above the least `memory` there is (32 MiB, which the pattern cannot say), or refused.
    sizes = ["512MB", "1 GiB", " 40000kib ", "1.5GB", "33554432", "40000000b", "12 parsecs"]
    sizes += ["0MB", "0"]
    sizes += ["0.5", "0.5B", "", "MB", "1e3", "-1MB", "1..5MB", "00.000MB", "3 M B"]
    for size in sizes:
        accepted = _accepted(tmp_path, limits={"memory": size})
        assert bool(re.fullmatch(text["pattern"], size)) is accepted, size

    environment = definitions["PluginToml"]["properties"]["environment"]
    assert environment["additionalProperties"]["type"] == "string"
    names = environment["propertyNames"]
    for name in ("A", "PATH_2", "", "A=B", "A\0", "é", "PYTHONINSPECT", "PYTHONOPTIMIZE"):
        in_schema = len(name) >= names["minLength"] and bool(re.fullmatch(names["pattern"], name))
        in_schema = in_schema and name not in names["not"]["enum"]
        assert in_schema is _accepted(tmp_path, environment={name: "v"}), name
    for value in ("v", "", "a\0b"):
        in_schema = bool(re.fullmatch(environment["additionalProperties"]["pattern"], value))
        assert in_schema is _accepted(tmp_path, environment={"A": value}), value
    assert not _accepted(tmp_path, environment={"A": 1})


@pytest.mark.parametrize("own_session", [False, True])
def test_schema_answers_at_once_when_the_import_leaves_a_process_running(
    tmp_path: Path, own_session: bool
) -> None:
    """A module that starts a long-lived process at import (holding the output it inherited)
    gets its schema as soon as the import is done, and that process is ended with it, even
    in a session of its own."""
    pid_file = tmp_path / "child.pid"
    folder = make_plugin(
        tmp_path,
        "import subprocess, sys, msgspec, isoplug\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import sys, time; print(\"CHILD UP\", flush=True); time.sleep(300)'], "
        f"start_new_session={own_session})\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "class S(msgspec.Struct):\n    n: int\n"
        "class P(isoplug.Plugin):\n    config_schema = S\n",
        "[config]\nn = 1\n",
    )
    result = isoplug("schema", "--timeout", "30", str(folder))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["$defs"]["config.S"]["required"] == ["n"]
    child = int(pid_file.read_text())
    # Gone, or a zombie its (dead) parent's reaper has not collected yet: not running.
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("loads", [True, False])
@pytest.mark.parametrize(
    "leaves",
    [
        "threading.Thread(target=lambda: time.sleep(1000)).start()\n",
        "atexit.register(time.sleep, 1000)\n",
    ],
    ids=["thread", "exit hook"],
)
def test_schema_answers_at_once_when_the_import_leaves_a_thread_or_an_exit_hook(
    tmp_path: Path, leaves: str, loads: bool
) -> None:
    """A non-daemon thread or an exit hook that the plugin's import leaves behind does not
    hold the answer until the timeout (which would then blame a blocking import), whether
    the plugin then loads or fails to."""
    folder = make_plugin(
        tmp_path,
        "import atexit, threading, time, msgspec, isoplug\n"
        + leaves
        + ("" if loads else "raise RuntimeError('libfoo 2.0 is missing')\n")
        + "class S(msgspec.Struct):\n    n: int\n"
        "class P(isoplug.Plugin):\n    config_schema = S\n",
    )
    result = isoplug("schema", "--timeout", "30", str(folder))
    if loads:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["$defs"]["config.S"]["required"] == ["n"]
    else:
        assert result.returncode == 2 and result.stdout == ""
        assert "could not be imported" in result.stderr, result.stderr
        assert "RuntimeError: libfoo 2.0 is missing" in result.stderr, result.stderr


def test_the_schema_describes_plugin_toml_in_its_own_words_under_python_oo() -> None:
    """The schema's description of plugin.toml is for its user, not a developer docstring,
    and stays under ``python -OO`` (which drops docstrings): the same schema either way."""
    plain = isoplug("schema", str(FIXTURES / "configured"))
    optimized = subprocess.run(
        [sys.executable, "-OO", "-m", "isoplug", "schema", str(FIXTURES / "configured")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == optimized.returncode == 0, plain.stderr + optimized.stderr
    assert optimized.stdout == plain.stdout
    root = json.loads(plain.stdout)["$defs"]["PluginToml"]
    assert root["title"] == "plugin.toml" and root["description"] == MANIFEST_DESCRIPTION
    assert "docstring" not in plain.stdout
