"""``python -m tmass_lake``: the ``tmass-lake`` command line (:func:`tmass_lake.cli.main`)."""

import sys

from tmass_lake.cli import main

if __name__ == "__main__":
    sys.exit(main())
