"""``python -m cvt``: the ``cvt`` command, for a checkout or an environment without the script."""

import sys

from cvt.cli import main

if __name__ == "__main__":
    sys.exit(main())
