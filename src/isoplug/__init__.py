"""isoplug: run third-party plugins in isolated runner processes without losing their logs."""

from isoplug.errors import IsoplugError

__all__ = ["IsoplugError", "__version__"]

__version__ = "0.1.0.dev0"
