"""isoplug's version, in a module of its own: the wire layer says it in every handshake (so a
refusal can name both sides' versions) and must not import the package above it."""

__all__ = ["VERSION"]

#: This isoplug's version, as pyproject.toml's; ``isoplug.__version__`` is this.
VERSION = "0.1.0.dev0"
