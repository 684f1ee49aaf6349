"""`python -m aspen` is the `aspen` command."""

import sys

from aspen.cli import main

sys.exit(main())
