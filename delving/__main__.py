"""``python -m delving`` is the ``delving`` command (W&B agents run it this way)."""

import sys

from delving.cli import main

sys.exit(main())
