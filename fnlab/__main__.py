"""``python -m fnlab`` runs the command line."""

import sys

from fnlab.cli import main

if __name__ == "__main__":  # a spawned Dask worker may import this module
    sys.exit(main())
