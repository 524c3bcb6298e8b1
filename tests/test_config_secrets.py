"""The value of a config field named like a secret (``api_token``, ``db_password``) is never
quoted in an error: those reach the console, stderr and logs, which an ``[environment]``
value never reaches either. Other fields' values are quoted, to show what was wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from isoplug import Host
from isoplug.errors import ConfigInvalid, PluginFailed
from isoplug.validation import may_be_secret
from tests.plugins_fixtures import FAST

VAULT_PLUGIN = """\
from typing import Annotated, Literal

import msgspec

import isoplug


class Database(msgspec.Struct):
    user: str = "app"
    password: Annotated[str, msgspec.Meta(min_length=12)] = "x" * 12


class Settings(msgspec.Struct):
    api_token: str = ""
    db: Database = msgspec.field(default_factory=Database)
    authMode: Literal["basic", "bearer"] = "basic"
    port: int = 80


class Vault(isoplug.Plugin):
    config_schema = Settings
"""


def write_vault(directory: Path) -> Path:
    folder = directory / "vault"
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        'id = "vault"\nversion = "1"\nentry = "vault:Vault"\n[restart]\npolicy = "never"\n'
    )
    (folder / "vault.py").write_text(VAULT_PLUGIN)
    return directory


@pytest.mark.parametrize(
    "name",
    ["api_token", "db_password", "DBPassword", "apiKey", "secret", "credentials.user",
     "servers[0].apitoken", "auth_header", "API_PIN", "private_keys", "passwd"],
)  # fmt: skip
def test_names_that_look_secret(name: str) -> None:
    assert may_be_secret(name)


@pytest.mark.parametrize(
    "name", ["port", "host", "greeting", "spin", "tokenizer", "hosts[1].name", "step-size"]
)
def test_names_that_do_not(name: str) -> None:
    assert not may_be_secret(name)


async def test_a_secret_fields_value_is_not_shown_when_it_fails_the_load(tmp_path: Path) -> None:
    overrides = {"vault": {"api_token": 748213990}}
    async with Host(write_vault(tmp_path), config=FAST, plugin_config=overrides) as host:
        with pytest.raises(PluginFailed) as caught:
            await host.wait_ready(30)
        error = host.plugin("vault").error or ""
    for said in (str(caught.value), error):
        assert (
            "config field 'api_token': must be a string, got integer (its value is not shown: "
            "it may be a secret)"
        ) in said
        assert "748213990" not in said


async def test_set_config_does_not_show_a_secret_fields_value(tmp_path: Path) -> None:
    async with Host(write_vault(tmp_path), config=FAST) as host:
        await host.wait_ready(30)
        for config, field, text in (
            ({"db": {"password": "hunter2"}}, "db.password", "hunter2"),
            ({"authMode": "digestive"}, "authMode", "digestive"),
        ):
            with pytest.raises(ConfigInvalid) as caught:
                await host.set_config("vault", config)
            assert f"config field {field!r}: " in str(caught.value)
            assert "(its value is not shown: it may be a secret)" in str(caught.value)
            assert text not in str(caught.value)
        # A field that is no secret still shows what was wrong.
        with pytest.raises(ConfigInvalid) as caught:
            await host.set_config("vault", {"port": "eighty"})
        assert "config field 'port': must be an integer, got string 'eighty'" in str(caught.value)
