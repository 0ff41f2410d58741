"""`python -m flexedge`: the `flexedge` command, for when its script is not on PATH."""

import sys

from flexedge.cli.main import main

sys.exit(main())
