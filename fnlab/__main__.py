"""``python -m fnlab`` runs the command line."""

import sys

from fnlab.cli import main

sys.exit(main())
