"""``python -m isoplug`` is the ``isoplug`` command."""

import sys

from isoplug.cli import console_script

sys.exit(console_script())
