"""A test plugin that reports what its runner was started with."""

from __future__ import annotations

import os
import sys
from typing import Any

# Found on the sys_path its manifest adds (lib/), which mypy does not know.
import envreader_helper  # type: ignore[import-not-found]

import isoplug


class EnvReader(isoplug.Plugin):
    @isoplug.method
    async def facts(self) -> dict[str, Any]:
        return {
            "environ": dict(os.environ),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "helper": envreader_helper.GREETING,
        }
