"""``python -m rtnclock``: the command line (see :mod:`rtnclock.cli`)."""

import sys

from .cli import main

sys.exit(main())
