"""A plugin's configuration in its runner: validated against the schema the plugin declares,
delivered to ``setup()`` as ``ctx.config``, and changed live through ``on_config``.

A plugin declares its schema as a class attribute, a ``msgspec.Struct``::

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        units: Literal["metric", "imperial"] = "metric"
        retries: int = 3

    class Weather(isoplug.Plugin):
        config_schema = Settings

        async def setup(self, ctx):
            self.settings = ctx.config          # a Settings instance

        async def on_config(self, settings):    # optional: take changes without a restart
            self.settings = settings

Without a schema, ``ctx.config`` is the table as given, read-only all the way down (nested
tables are read-only mappings too, lists are tuples). A configuration that does not fit the
schema fails the plugin's load, with the field named
(``plugin 'weather': config field 'retries': must be an integer, got string 'x'``); so does a
key that names no field of the schema (a typo), whether or not it forbids unknown fields; so
does a
schema whose checks raise anything else (a ``__post_init__`` raising ``RuntimeError``): the
plugin's code refused that configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec
import msgspec.inspect

from isoplug.errors import ConfigInvalid
from isoplug.runner.config_keys import unknown_fields
from isoplug.validation import explain_validation_error

__all__ = [
    "accepts_live_config",
    "declared_schema",
    "read_only",
    "unknown_fields",
    "validate_config",
]


def validate_config(plugin_id: str, plugin_class: type, raw: Mapping[str, Any]) -> Any:
    """``raw`` as the plugin's ``config_schema`` wants it (a read-only mapping without one).
    Raises :class:`ConfigInvalid` naming the plugin and the field."""
    schema = declared_schema(plugin_id, plugin_class)
    if schema is None:
        return read_only(raw)
    unknown = unknown_fields(raw, msgspec.inspect.type_info(schema))
    if unknown:
        # Taken as typos, as the manifest's own unknown keys are, whether or not the schema
        # forbids unknown fields: msgspec would drop them silently.
        path, known = unknown[0]
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigInvalid(
            f"plugin {plugin_id!r}: config field {path!r}: is not a known field of its "
            f"config_schema {schema.__qualname__} (known there: {', '.join(known) or 'none'})"
            f"{more}"
        )
    try:
        return msgspec.convert(dict(raw), schema)
    except msgspec.ValidationError as exc:
        explained = explain_validation_error(str(exc), raw, schema=schema)
        field = f"config field {explained.field!r}" if explained.field else "config"
        raise ConfigInvalid(f"plugin {plugin_id!r}: {field}: {explained.problem}") from None
    except Exception as exc:
        # msgspec turns only ValueError and TypeError from the schema's own checks
        # (``__post_init__``) into ValidationError; anything else is still that code refusing
        # this configuration, not a crash: the plugin keeps what it had.
        raise ConfigInvalid(
            f"plugin {plugin_id!r}: config: its config_schema {schema.__qualname__} refused it: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def read_only(value: Any) -> Any:
    """``value`` with every table a read-only mapping and every list a tuple, all the way
    down: a plugin without a schema cannot change its configuration in place (an edit that
    the host would not know of, and that a restart would undo)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: read_only(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(read_only(item) for item in value)
    return value


def declared_schema(plugin_id: str, plugin_class: type) -> type[msgspec.Struct] | None:
    """The plugin's ``config_schema`` (None: it declares none). Raises :class:`ConfigInvalid`
    when it is not a ``msgspec.Struct`` subclass (``isoplug schema`` refuses it the same way)."""
    schema = getattr(plugin_class, "config_schema", None)
    if schema is None:
        return None
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        raise ConfigInvalid(
            f"plugin {plugin_id!r}: config_schema must be a msgspec.Struct subclass, got {schema!r}"
        )
    return schema


def accepts_live_config(instance: object) -> bool:
    """Whether the plugin takes a new configuration without a restart (it has ``on_config``)."""
    return callable(getattr(instance, "on_config", None))
