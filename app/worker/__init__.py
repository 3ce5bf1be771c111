"""The worker side: what runs inside the Celery worker processes.

``drain`` claims due messages and runs the processor on them, ``processors``
holds the default processor and loads the configured one, ``sweep`` is the
recovery sweep in each worker's main process, and ``metrics_server`` serves a
worker's metrics. The Celery task that starts a drain is :mod:`app.tasks`.
"""
