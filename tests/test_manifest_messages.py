"""plugin.toml errors a newcomer can act on: a key TOML read into a table because it comes
after that table's header is said to be misplaced, with where it belongs; every unknown key is
named, not the first; a bad value is quoted. Exact texts: they are what a user reads."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from isoplug import Host, PluginUnavailable
from isoplug.host.manifest import ManifestError, load_manifest
from isoplug.testing import FAST, watching
from tests.plugins_fixtures import copy_plugins

MINIMAL = 'id = "p"\nversion = "1"\nentry = "m:P"\n'


def problem_of(tmp_path: Path, text: str) -> str:
    """What the ManifestError of a plugin.toml holding ``text`` says after its file's path."""
    (tmp_path / "plugin.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path)
    prefix = f"{tmp_path / 'plugin.toml'}: "
    assert str(caught.value).startswith(prefix)
    return str(caught.value).removeprefix(prefix)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            'id = "a"\nversion = "1"\n[restart]\nmax_restarts = 3\nentry = "am:P"\n',
            "'entry' is a top-level key, but it comes after the [restart] header, so TOML reads "
            "it as 'restart.entry', and the required top-level 'entry' is missing: move it "
            "above the first [table] header",
            id="a required top-level key below a header",
        ),
        pytest.param(
            'id = "b"\nversion = "1"\nentry = "bm:P"\n[limits]\nmemory = "200MB"\n'
            'capabilities = ["clock.now"]\nlog_level = "VERBOSE"\n',
            "'capabilities' and 'log_level' are top-level keys, but they come after the "
            "[limits] header, so TOML reads them as 'limits.capabilities' and "
            "'limits.log_level': move them above the first [table] header",
            id="optional top-level keys below a header",
        ),
        pytest.param(
            '[restart]\nid = "x"\nversion = "1"\nentry = "m:P"\n',
            "'id', 'version' and 'entry' are top-level keys, but they come after the [restart] "
            "header, so TOML reads them as 'restart.id', 'restart.version' and 'restart.entry', "
            "and the required top-level 'id', 'version' and 'entry' are missing: move them "
            "above the first [table] header",
            id="a whole file below a header",
        ),
        pytest.param(
            'id = "p"\nversion = "1"\n[config]\nunits = "metric"\nentry = "m:P"\n',
            "'entry' is a top-level key, but it comes after the [config] header, so TOML reads "
            "it as 'config.entry', and the required top-level 'entry' is missing: move it above "
            "the first [table] header",
            id="a required key below the free-form [config]",
        ),
        pytest.param(
            MINIMAL + '[environment]\nUNITS = "metric"\nmax_restarts = 3\nwindow = 2\n',
            "'max_restarts' and 'window' are keys of [restart], but they come after the "
            "[environment] header, so TOML reads them as 'environment.max_restarts' and "
            "'environment.window': put them below a new [restart] header",
            id="keys of [restart] below [environment], no [restart] yet",
        ),
        pytest.param(
            MINIMAL + "[limits]\nmax_restarts = 3\n[restart]\nwindow = 1\n",
            "'max_restarts' is a key of [restart], but it comes after the [limits] header, so "
            "TOML reads it as 'limits.max_restarts': move it below the [restart] header",
            id="a key of [restart] below [limits]",
        ),
        pytest.param(
            MINIMAL + 'max_restarts = 3\nwindow = 3\nmemory = "1GB"\n',
            "'max_restarts' and 'window' are keys of [restart], not top-level keys: put them "
            "below a new [restart] header; 'memory' is a key of [limits], not a top-level key: "
            "put it below a new [limits] header",
            id="keys of tables at the top",
        ),
        pytest.param(
            'id = "c"\nversion = "1"\nentry = "cm:P"\ncaptabilities = []\ndescripton = "x"\n'
            '[limits]\nmemroy = "1GB"\ncpu = 5\n',
            "unknown fields 'captabilities' (did you mean 'capabilities'?), 'descripton' (did "
            "you mean 'description'?), 'limits.memroy' (did you mean 'memory'?) and "
            "'limits.cpu'",
            id="every unknown key, each with its suggestion",
        ),
        pytest.param(
            MINIMAL + "[restart]\nretries = 3\n",
            "unknown field 'restart.retries'",
            id="one unknown key",
        ),
        pytest.param(
            MINIMAL + "".join(f"extra{n} = 1\n" for n in range(11)),
            "unknown fields 'extra0', 'extra1', 'extra2', 'extra3', 'extra4', 'extra5', "
            "'extra6', 'extra7' and 3 more",
            id="unknown keys past the cap are counted",
        ),
        pytest.param(
            MINIMAL + f"{'k' * 150} = 1\n",
            f"unknown field {'k' * 100!r}... (150 characters)",
            id="a long unknown key is cut",
        ),
        pytest.param(
            MINIMAL + '[restart]\nentry = "n:Q"\nbogus = 1\n',
            "unknown fields 'restart.entry' and 'restart.bogus'",
            id="a top-level key set above is not moved there",
        ),
        pytest.param(
            'id = "p"\nversion = "1"\nbogus = 1\n[restart]\nentry = "m:P"\n',
            "'entry' is a top-level key, but it comes after the [restart] header, so TOML reads "
            "it as 'restart.entry', and the required top-level 'entry' is missing: move it above "
            "the first [table] header; unknown field 'bogus'",
            id="misplaced and unknown keys together",
        ),
        pytest.param(
            MINIMAL + 'log_level = "VERBOSE"\n',
            "field 'log_level': must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL' "
            "(in any case), got 'VERBOSE'",
            id="a log level not known",
        ),
        pytest.param(
            MINIMAL + 'log_level = "\\u001b[2J"\n',
            "field 'log_level': must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL' "
            "(in any case), got '\\x1b[2J'",
            id="a log level quoted escaped",
        ),
        pytest.param(
            MINIMAL + '[environment]\n"" = "x"\n',
            "field 'environment.': is not a valid environment variable name: it is empty",
            id="an empty variable name",
        ),
        pytest.param(
            MINIMAL + "[environment]\n'A=B' = 'x'\n",
            "field 'environment.A=B': is not a valid environment variable name: it holds '=', "
            "which ends a name",
            id="a variable name holding '='",
        ),
        pytest.param(
            MINIMAL + '[environment]\nTOKEN = "secret\\u0000"\n',
            "field 'environment.TOKEN': its value holds a NUL character, which no environment "
            "variable can hold",
            id="a variable value holding NUL, not quoted",
        ),
        pytest.param(
            MINIMAL + "[config]\nx = 9223372036854775808\n",
            "field 'config.x': is an integer outside TOML's range (64-bit signed): "
            "9223372036854775808",
            id="an integer past 64 bits",
        ),
        pytest.param(
            MINIMAL + f"[config]\nx = {'9' * 60}\n",
            "field 'config.x': is an integer outside TOML's range (64-bit signed): "
            f"{'9' * 20}... (60 digits)",
            id="a long integer is cut",
        ),
    ],
)
def test_a_manifest_error_says_what_to_change(tmp_path: Path, text: str, problem: str) -> None:
    assert problem_of(tmp_path, text) == problem


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(MINIMAL + '[environment]\nmax_restarts = "3"\n', id="a string variable"),
        pytest.param(MINIMAL + '[config]\ndescription = "x"\n', id="an optional key in config"),
    ],
)
def test_a_known_name_that_may_be_a_setting_of_a_free_form_table_is_left_there(
    tmp_path: Path, text: str
) -> None:
    """A variable named ``max_restarts`` and a plugin setting named ``description`` are
    allowed: a misplaced key is told only where the schema can tell it."""
    (tmp_path / "plugin.toml").write_text(text, encoding="utf-8")
    load_manifest(tmp_path)


TRAPPED = (
    "'entry' is a top-level key, but it comes after the [restart] header, so TOML reads it as "
    "'restart.entry', and the required top-level 'entry' is missing: move it above the first "
    "[table] header"
)


async def test_a_host_start_says_where_the_misplaced_key_belongs(tmp_path: Path) -> None:
    """A plugin whose ``entry`` was added below ``[restart]`` is skipped with the message
    above: in host.problems, in the host's error record, and in the failure of a call to it;
    the other plugin runs."""
    plugins = copy_plugins(tmp_path, "echo")
    trapped = plugins / "trapped"
    shutil.copytree(plugins / "echo", trapped)
    (trapped / "plugin.toml").write_text(
        'id = "trapped"\nversion = "1"\n[restart]\nmax_restarts = 3\nentry = "echo_plugin:Echo"\n',
        encoding="utf-8",
    )
    expected = f"{trapped / 'plugin.toml'}: {TRAPPED}; plugin skipped"
    with watching("isoplug.host") as records:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            assert host.problems == [expected]
            with pytest.raises(PluginUnavailable) as unavailable:
                await host.call("trapped", "echo", value=1)
            assert await host.call("echo", "echo", value=1) == 1
    assert str(unavailable.value) == f"no plugin 'trapped' (plugins: echo; skipped: {expected})"
    errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
    assert errors == [expected]
