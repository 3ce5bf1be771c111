"""Gunicorn settings for the web service (``python web.py``, or ``gunicorn -c gunicorn.conf.py``).

Every value comes from the settings declared in app/config.py (workers from
``WEB_CONCURRENCY``, Gunicorn's own variable), checked before any worker boots, and
can be overridden on the command line. Before binding, the master refuses a port
another server holds and imports the processor once (in a child process). Where the
app logs JSON (production), so do Gunicorn's own lines; every access line carries the
request id.
"""

import importlib.util
import os
import socket
import sys
from pathlib import Path

from gunicorn.glogging import Logger
from prometheus_client import multiprocess
from pythonjsonlogger.json import JsonFormatter


def _settings_module():
    """app/config.py, the one declaration of the settings, loaded as a file."""
    # Importing the app package would load it in the master, before gevent patches the workers.
    path = Path(__file__).resolve().parent / "app" / "config.py"
    spec = importlib.util.spec_from_file_location("n3hub_settings", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_settings = _settings_module()
# Every setting, the app's included, is checked here, before any worker boots; a bad one
# ends the master with one line (ConfigError is a SystemExit).
CONFIG = _settings.load_config()

# The fields of app/logs.py, which the master cannot import either.
LOG_FORMAT = CONFIG["LOG_FORMAT"]
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message_id)s %(message)s"

bind = f"{CONFIG['HOST']}:{CONFIG['PORT']}"
# One process per core, each serving many requests at once on gevent's greenlets:
# a request mostly waits on the database, and the requests of one process share
# their commits (app/ingest.py), which beats more processes queueing on SQLite's
# single write lock. Greenlets hand over more cheaply than threads: on 2 cores they
# store 1.6-1.9x the messages per second of 16 gthreads
# (BENCHMARKS.md, "Gunicorn's gevent worker").
workers = CONFIG["WEB_CONCURRENCY"]
worker_class = CONFIG["GUNICORN_WORKER_CLASS"]
# Only for GUNICORN_WORKER_CLASS=gthread; gevent takes up to worker_connections (1000).
threads = CONFIG["GUNICORN_THREADS"]
# Each worker listens on a socket of its own (SO_REUSEPORT) and Linux picks one for each
# new connection by a hash of its addresses. On one shared socket, the worker that woke first
# took most of a burst: 16 connections opened together split as unevenly as 15 to 1,
# and a process with few connections leaves its core idle while it waits on its commits.
# Other systems do not balance such sockets, so there the workers share one.
reuse_port = CONFIG["GUNICORN_REUSE_PORT"]
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = CONFIG["GUNICORN_ACCESSLOG"] or None
# Gunicorn's text access line, with the request id the app returns in X-Request-ID.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms req=%({x-request-id}o)s "%(a)s"'
errorlog = "-"


class JsonLinesLogger(Logger):
    """Gunicorn's own lines as the service's JSON objects; an access line carries the request id."""

    def setup(self, cfg):
        super().setup(cfg)
        formatter = JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level"})
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(formatter)
            handler.addFilter(_fill_missing_ids)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        request_id = next((v for k, v in resp.headers if k.lower() == "x-request-id"), "-")
        status = str(resp.status).split(None, 1)[0]
        self.access_log.info(
            "%s %s %s",
            environ["REQUEST_METHOD"],
            environ["RAW_URI"],
            status,
            extra={
                "request_id": request_id,
                "status": int(status) if status.isdigit() else status,
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "remote_addr": environ.get("REMOTE_ADDR", "-"),
                "user_agent": environ.get("HTTP_USER_AGENT", "-"),
            },
        )


def _fill_missing_ids(record):
    record.request_id = getattr(record, "request_id", "-")
    record.message_id = getattr(record, "message_id", "-")
    return True


logger_class = JsonLinesLogger if LOG_FORMAT == "json" else Logger
wsgi_app = "app:create_app()"
# Gunicorn 27's control socket lives in $HOME and would be shared by every server a user runs.
control_socket_disable = True


def on_starting(server):
    """Before any socket or worker: refuse a taken port, and check that the processor imports."""
    for address in server.cfg.address:
        if isinstance(address, tuple):  # a Unix socket path is refused by Gunicorn's own bind
            _refuse_a_taken_port(*address[:2])
    _check_processor(CONFIG["PROCESSOR"])


def _refuse_a_taken_port(host, port):
    """Exit if another server listens at host:port."""
    # With SO_REUSEPORT both servers could bind it and split the connections between them,
    # silently; a plain bind (no SO_REUSEPORT) fails while any other socket listens there.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            sys.exit(
                f"gunicorn: cannot listen at {host}:{port} ({error.strerror}): another server"
                " holds that port; stop it, or set PORT (or --bind) to a free one"
            )


def _check_processor(path):
    """Import N3HUB_PROCESSOR in a forked child, so that the master itself imports no app code."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            _settings.import_callable("N3HUB_PROCESSOR", path)
            problem = ""
        except SystemExit as error:
            problem = str(error.code)
        os.write(writer, problem.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        problem = pipe.read().decode()
    os.waitpid(pid, 0)
    if problem:
        sys.exit(problem)


def when_ready(server):
    """Name the address: with ``reuse_port`` Gunicorn's own line names none (no master socket)."""
    if server.cfg.reuse_port:
        for host, port in (a[:2] for a in server.cfg.address if isinstance(a, tuple)):
            shown = f"[{host}]" if ":" in host else host
            server.log.info("Listening at: http://%s:%s (a socket per worker)", shown, port)


def post_fork(server, worker):
    """Say where a worker listens: with ``reuse_port`` the master holds no socket to name."""
    if server.cfg.reuse_port:
        addresses = ", ".join(map(str, worker.sockets))
        server.log.info("Worker %s listening at: %s", worker.pid, addresses)


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if CONFIG["PROMETHEUS_MULTIPROC_DIR"]:
        multiprocess.mark_process_dead(worker.pid)
