"""Found only through the manifest's sys_path."""

GREETING = "from lib"
