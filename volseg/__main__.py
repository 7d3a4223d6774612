"""``python -m volseg <subcommand>``: the ``volseg`` command (`volseg.cli`)."""

import sys

from volseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
