"""Gunicorn settings for the web service (``gunicorn -c gunicorn.conf.py``).

Workers come from ``WEB_CONCURRENCY`` (Gunicorn's own variable); every value
here can be overridden on the command line.
"""

import os
import sys

from prometheus_client import multiprocess

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
# One process per core, each serving many requests at once on gevent's greenlets:
# a request mostly waits on the database, and the requests of one process share
# their commits (app/ingest.py), which beats more processes queueing on SQLite's
# single write lock. Greenlets hand over more cheaply than threads: on 2 cores
# they store 1.6-1.9x the messages per second of 16 gthreads (see BENCHMARKS.md).
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
# Only for GUNICORN_WORKER_CLASS=gthread; gevent takes up to worker_connections (1000).
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
# Each worker listens on a socket of its own (SO_REUSEPORT) and Linux picks one for each
# new connection by a hash of its addresses. On one shared socket, the worker that woke first
# took most of a burst: 16 connections opened together split as unevenly as 15 to 1,
# and a process with few connections leaves its core idle while it waits on its commits.
# Other systems do not balance such sockets, so there the workers share one.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1" if sys.platform == "linux" else "0") == "1"
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None
errorlog = "-"
wsgi_app = "app:create_app()"
# Gunicorn 27's control socket lives in $HOME and would be shared by every server a user runs.
control_socket_disable = True


def post_fork(server, worker):
    """Say where a worker listens: with ``reuse_port`` the master holds no socket to name."""
    if server.cfg.reuse_port:
        addresses = ", ".join(map(str, worker.sockets))
        server.log.info("Worker %s listening at: %s", worker.pid, addresses)


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
