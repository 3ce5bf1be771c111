"""The first conftest pytest loads, before anything imports prometheus_client.

prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when it is imported, so
the caller's value is dropped here; ``tests/conftest.py`` drops the other settings.
The app's processes that tests start get their own environment.
"""

import os

os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
