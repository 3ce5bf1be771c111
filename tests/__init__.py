"""The test suite (``make test``).

prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` when the app's metrics are
defined, on the app's first import, so the caller's value is dropped here, before
any test module imports the app; ``tests/conftest.py`` drops the other settings.
"""

import os

os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
