"""plugin.toml validation and plugin discovery: every problem names the file and the field."""

from __future__ import annotations

import codecs
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isoplug.host.manifest import ManifestError, RestartPolicy, load_manifest, parse_manifest
from isoplug.host.registry import discover, plan_runners

MINIMAL = 'id = "p"\nversion = "1"\nentry = "mod:Plugin"\n'


def write_plugin(root: Path, name: str, text: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "plugin.toml").write_text(text)
    return directory


def test_a_full_manifest_is_parsed_into_a_frozen_manifest(tmp_path: Path) -> None:
    """Every documented field is read, with its type."""
    directory = write_plugin(
        tmp_path,
        "weather",
        'id = "weather"\nversion = "1.2.0"\ndescription = "d"\nentry = "pkg.mod:Weather"\n'
        'group = "io"\nlog_level = "debug"\nlog_write_through_rate = 0\n'
        'capabilities = ["http.get"]\nstart = "spawn"\n'
        '[environment]\nUNITS = "metric"\n'
        '[restart]\npolicy = "never"\nmax_restarts = 2\nwindow = 10\n'
        "backoff_initial = 0.1\nbackoff_max = 1.5\n",
    )
    manifest = load_manifest(directory)
    assert (manifest.id, manifest.version, manifest.entry) == (
        "weather",
        "1.2.0",
        "pkg.mod:Weather",
    )
    assert manifest.group == "io" and manifest.runner_id == "io"
    assert manifest.log_level == "DEBUG" and manifest.log_write_through_rate == 0.0
    assert manifest.capabilities == ("http.get",) and manifest.start == "spawn"
    assert dict(manifest.environment) == {"UNITS": "metric"}
    assert manifest.restart == RestartPolicy("never", 2, 10.0, 0.1, 1.5)
    with pytest.raises(AttributeError):
        manifest.id = "other"  # type: ignore[misc]


def test_defaults_apply_to_a_minimal_manifest(tmp_path: Path) -> None:
    """id, version and entry are enough."""
    manifest = load_manifest(write_plugin(tmp_path, "p", MINIMAL))
    assert manifest.runner_id == "p" and manifest.capabilities == ()
    assert manifest.log_write_through_rate is None  # the handler's own default
    assert manifest.start == "fork"  # from the host's zygote, where the platform allows
    assert manifest.stdio == "records"  # printed lines become records in the runner
    assert manifest.restart == RestartPolicy()


def test_backoff_doubles_up_to_its_maximum() -> None:
    """Restart delays: initial, twice that, ... capped at backoff_max."""
    policy = RestartPolicy(backoff_initial=0.5, backoff_max=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MINIMAL + 'captabilities = ["x"]\n',
            "unknown field 'captabilities' (did you mean 'capabilities'?)",
        ),
        (MINIMAL + "[restart]\nretries = 3\n", "unknown field 'restart.retries'"),
        (
            MINIMAL + "[restart]\nbackof_max = 3\n",
            "unknown field 'restart.backof_max' (did you mean 'backoff_max'?)",
        ),
        ('version = "1"\nentry = "m:P"\n', "field 'id': is required but missing"),
        ('id = "p"\nversion = "1"\n', "field 'entry': is required but missing"),
        ('id = "p"\n', "required fields 'version' and 'entry' are missing"),
        (
            'id = "p"\nversion = "1"\nentri = "m:P"\n',
            "unknown field 'entri' (did you mean 'entry'?); required field 'entry' is missing",
        ),
        (
            'id = "p"\nversion = "1"\nentry = "m"\n',
            "field 'entry': 'm' is not valid: must look like 'module:Att",
        ),
        (
            'id = "a.b"\nversion = "1"\nentry = "m:P"\n',
            "field 'id': 'a.b' is not valid: start with an ASCII letter",
        ),
        (
            'id = "p"\nversion = 1\nentry = "m:P"\n',
            "field 'version': must be a string, got integer 1",
        ),
        (MINIMAL + 'log_level = "loud"\n', "field 'log_level': must be one of 'DEBUG', 'INFO'"),
        (
            MINIMAL + "log_write_through_rate = -1\n",
            "'log_write_through_rate': must be a number of 0 or more, got integer -1",
        ),
        (
            MINIMAL + "log_write_through_rate = inf\n",
            "'log_write_through_rate': must be a number of at most 1e12, got number inf",
        ),
        (
            MINIMAL + "[restart]\nwindow = 1e308\n",
            "'restart.window': must be a number of at most 1e12, got number 1e+308",
        ),
        (
            MINIMAL + "[limits]\nopen_files = 0\n",
            "'limits.open_files': must be an integer of at least 1, got integer 0",
        ),
        (
            MINIMAL + "log_write_through_rate = true\n",
            "'log_write_through_rate': must be a number, got boolean True",
        ),
        (
            MINIMAL + 'log_write_through_rate = "x"\n',
            "'log_write_through_rate': must be a number, got string 'x'",
        ),
        (
            MINIMAL + "capabilities = [1]\n",
            "field 'capabilities[0]': must be a string, got integer 1",
        ),
        (MINIMAL + 'start = "exec"\n', "field 'start': must be one of 'fork', 'spawn', got 'exec'"),
        (MINIMAL + "start = 1\n", "field 'start': must be a string, got integer 1"),
        (
            MINIMAL + "[environment]\nX = 1\n",
            "field 'environment.X': must be a string, got integer (its value is not shown",
        ),
        (
            MINIMAL + "[restart]\nmax_restarts = true\n",
            "'restart.max_restarts': must be an integer, got boolean True",
        ),
        (
            MINIMAL + "[restart]\nwindow = -1\n",
            "field 'restart.window': must be a number of 0 or more, got integer -1",
        ),
        (
            MINIMAL + "[restart]\nbackoff_initial = 2\nbackoff_max = 1.5\n",
            "field 'restart.backoff_max': must not be less than restart.backoff_initial: "
            "backoff_max = 1.5, backoff_initial = 2",
        ),
        (
            MINIMAL + "[restart]\nwindow = nan\n",
            "field 'restart.window': must be a number of 0 or more, got number nan",
        ),
        (
            MINIMAL + '[restart]\npolicy = "always"\n',
            "'restart.policy': must be one of 'never', 'on-failure', got 'always'",
        ),
        ("id = ", "is not valid TOML"),
        (
            MINIMAL + 'capabilities = [""]\n',
            "'capabilities[0]': must be a string that is not empty",
        ),
        (MINIMAL + "config = 3\n", "field 'config': must be a table, got integer 3"),
        (MINIMAL + "[environment]\n'A=B' = 'x'\n", "'environment.A=B': is not a valid environment"),
    ],
)
def test_invalid_manifests_name_the_file_the_field_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each mistake gives a ManifestError whose text locates and explains it."""
    directory = write_plugin(tmp_path, "p", text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(directory)
    assert str(caught.value).startswith(str(directory / "plugin.toml"))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "backoff_max (1) must not be less than"),
        ({"window": math.nan}, "window must be a finite number of 0 or more, not nan"),
        ({"backoff_max": math.inf}, "backoff_max must be a finite number of 0 or more, not inf"),
        ({"backoff_initial": -1.0}, "backoff_initial must be a finite number of 0 or more"),
    ],
)
def test_a_restart_policy_built_in_code_refuses_what_plugin_toml_refuses(
    settings: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"RestartPolicy: {message}")):
        RestartPolicy(**settings)  # type: ignore[arg-type]


def test_a_missing_manifest_is_reported(tmp_path: Path) -> None:
    """A directory without plugin.toml cannot be loaded as a plugin."""
    with pytest.raises(ManifestError, match="cannot be read"):
        load_manifest(tmp_path)


def test_a_manifest_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows Notepad starts a UTF-8 file with a byte order mark, which TOML does not allow
    (it said "Invalid statement (at line 1, column 1)"): it says nothing of the text."""
    (tmp_path / "plugin.toml").write_bytes(codecs.BOM_UTF8 + MINIMAL.encode())
    assert load_manifest(tmp_path).id == "p"


def test_a_folder_name_that_is_not_utf8_is_said_to_be_so(tmp_path: Path) -> None:
    """Not "control or invisible characters": which bytes, and what to do."""
    write_plugin(tmp_path, os.fsdecode(b"pl\xe9in"), MINIMAL)
    (problem,) = discover(tmp_path).problems
    assert (
        "the plugin's folder name 'pl\\udce9in' holds bytes that are not utf-8 text (0xe9, "
        "shown as \\udcXX); rename the folder with a name in UTF-8; plugin skipped"
    ) in problem


def test_discovery_skips_bad_plugins_and_duplicate_ids_but_keeps_the_rest(tmp_path: Path) -> None:
    """Bad and duplicate plugins become problems; directories without a manifest are ignored."""
    write_plugin(tmp_path, "a_good", MINIMAL)
    write_plugin(tmp_path, "b_bad", MINIMAL + "oops = 1\n")
    write_plugin(tmp_path, "c_same_id", MINIMAL)
    (tmp_path / "__pycache__").mkdir()
    found = discover(tmp_path)
    assert [m.id for m in found.manifests] == ["p"]
    assert len(found.problems) == 2
    assert "b_bad/plugin.toml: unknown field 'oops'; plugin skipped" in found.problems[0]
    assert "c_same_id/plugin.toml: field 'id': 'p' is already used by" in found.problems[1]


def test_discovery_of_a_missing_directory_says_so(tmp_path: Path) -> None:
    """An unusable plugins directory is an error of its own."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(tmp_path / "nope")


def test_plugins_of_a_group_share_one_runner(tmp_path: Path) -> None:
    """Plugins naming the same group get one runner; others get their own."""
    for name, group in (("a", "io"), ("b", "io"), ("c", None)):
        text = f'id = "{name}"\nversion = "1"\nentry = "m:P"\n'
        if group:
            text += f'group = "{group}"\n'
        write_plugin(tmp_path, name, text)
    plans, problems = plan_runners(discover(tmp_path).manifests)
    assert problems == []
    assert {p.runner_id: [m.id for m in p.manifests] for p in plans} == {
        "io": ["a", "b"],
        "c": ["c"],
    }


def test_a_group_whose_environments_disagree_skips_the_later_plugin(tmp_path: Path) -> None:
    """Two plugins of one group cannot set one variable to two values in one process."""
    for name, value in (("a", "1"), ("b", "2")):
        write_plugin(
            tmp_path,
            name,
            f'id = "{name}"\nversion = "1"\nentry = "m:P"\ngroup = "g"\n'
            f'[environment]\nMODE = "{value}"\n',
        )
    plans, problems = plan_runners(discover(tmp_path).manifests)
    assert [[m.id for m in p.manifests] for p in plans] == [["a"]]
    assert "field 'environment.MODE': differs from plugin 'a' of group 'g'" in problems[0]


def test_a_group_whose_write_through_rates_disagree_skips_the_later_plugin(
    tmp_path: Path,
) -> None:
    """One process has one log handler: members may leave the rate unset, not set two."""
    for name, setting in (("a", "log_write_through_rate = 0\n"), ("b", ""), ("c", "")):
        write_plugin(
            tmp_path, name, f'id = "{name}"\nversion = "1"\nentry = "m:P"\ngroup = "g"\n{setting}'
        )
    write_plugin(
        tmp_path,
        "d",
        'id = "d"\nversion = "1"\nentry = "m:P"\ngroup = "g"\nlog_write_through_rate = 500\n',
    )
    plans, problems = plan_runners(discover(tmp_path).manifests)
    assert [[m.id for m in p.manifests] for p in plans] == [["a", "b", "c"]]
    assert (
        "field 'log_write_through_rate': 500.0 here, 0.0 in plugin 'a' of group 'g'" in problems[0]
    )


_toml_scalars = st.one_of(
    st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans()
)
_toml_values = st.recursive(
    _toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
_field_names = st.sampled_from(
    [
        "id",
        "version",
        "entry",
        "group",
        "log_level",
        "capabilities",
        "environment",
        "restart",
        "config",
        "log_write_through_rate",
        "other",
    ]
)


def _validation_error(document: dict[str, Any], path: Path) -> ManifestError | None:
    try:
        parse_manifest(document, directory=path.parent, path=path)
    except ManifestError as exc:
        return exc
    return None


# The machine may be busy: generation speed is not what this tests.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(_field_names, _toml_values, max_size=6))
def test_any_document_is_a_manifest_or_one_clear_error(document: dict[str, Any]) -> None:
    """Whatever TOML gives, validation returns a Manifest or raises a ManifestError that names
    the file (and a field of the document, when it blames one)."""
    path = Path("/plugins/p/plugin.toml")
    error = _validation_error(document, path)
    if error is not None:
        assert str(error).startswith(str(path))
        if error.field is not None:
            top = error.field.split(".")[0].split("[")[0]
            assert top in {*document, "id", "version", "entry"}


def test_stdio_is_records_or_pipe_and_a_group_cannot_pipe(tmp_path: Path) -> None:
    """``stdio = "pipe"`` is read; another value names the field and the choices; in a group it
    is refused, saying why, since the members share the runner's pipes."""
    assert load_manifest(write_plugin(tmp_path, "a", MINIMAL + 'stdio = "pipe"\n')).stdio == "pipe"
    with pytest.raises(
        ManifestError, match="field 'stdio': must be one of 'pipe', 'records', got 'fd'"
    ):
        load_manifest(write_plugin(tmp_path, "b", MINIMAL + 'stdio = "fd"\n'))
    with pytest.raises(ManifestError, match="field 'stdio'") as refused:
        load_manifest(write_plugin(tmp_path, "c", MINIMAL + 'stdio = "pipe"\ngroup = "g"\n'))
    assert "which plugin of group 'g' printed" in str(refused.value)
