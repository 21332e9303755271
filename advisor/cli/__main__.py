"""`python -m advisor.cli`: the `advisor` command, where its script is not on PATH."""

import sys

from advisor.cli import main

sys.exit(main())
