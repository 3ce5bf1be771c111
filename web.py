"""Production web server: ``python web.py [Gunicorn options]`` runs Gunicorn with gunicorn.conf.py.

Gunicorn reads ``WEB_CONCURRENCY`` itself when it is imported, before any
config file, so a bad value would end in Gunicorn's traceback. This checks every
setting first, by running the config file (a bad one ends the process with one
line naming it), and only then imports and starts Gunicorn.
"""

import runpy
import sys
from pathlib import Path

CONFIG_FILE = Path(__file__).resolve().parent / "gunicorn.conf.py"


def main() -> None:
    runpy.run_path(str(CONFIG_FILE))
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", "-c", str(CONFIG_FILE), *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
