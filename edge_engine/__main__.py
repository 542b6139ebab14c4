"""`python -m edge_engine …`: the `streamql edge` command on its own."""
import sys

from .cli import main

sys.exit(main())
