"""`python -m durable`: the same as the `durable` command."""

import sys

from durable.cli import main

sys.exit(main())
