"""``python -m spectral``: the same as the ``spectral`` command."""

import sys

from .cli import main

sys.exit(main())
