"""``python -m credward`` is the ``credward`` command."""

import sys

from credward.cli import main

sys.exit(main())
