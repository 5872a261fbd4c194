"""A sweep worker for tests that run several processes: the ``augforge`` command line with
``augforge.testing``'s fake components registered (``python tests/sweep_worker.py sweep ...``)."""

import sys

from augforge import plugins, testing
from augforge.cli import main

if __name__ == "__main__":
    plugins.register(testing, name="augforge.testing")
    main(sys.argv[1:])
