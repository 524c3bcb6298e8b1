"""``python -m isoplug`` is the ``isoplug`` command."""

import sys

from isoplug.cli import main

sys.exit(main())
