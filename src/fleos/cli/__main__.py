"""`python -m fleos.cli` runs the `fleos` command line."""

import sys

from fleos.cli import main

sys.exit(main())
