"""``python -m scripts.bench``: the entry point."""

import os
import sys


def entry() -> int:
    """Run the bench with this process's own environment made safe first."""
    # The bench process keeps no metrics of its own. With PROMETHEUS_MULTIPROC_DIR set
    # (``make`` exports it), importing the app would write files into the user's
    # metrics directory, or fail where that directory does not exist yet.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from scripts.bench.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(entry())
