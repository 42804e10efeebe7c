"""Entry point of the frozen ``cvt``: the same command line as the installed ``cvt`` script.

``freeze_support`` first: the ingest's process pool (forkserver) starts helper processes by
running this executable again, and they must not reach the command line.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from cvt.cli import main

    sys.exit(main())
