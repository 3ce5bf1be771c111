"""What a worker process does when Celery starts and stops it.

A prefork pool process may restart itself (the pool starts a fresh one), so its
pipeline may shed threads it had to abandon; a stopping process first lets its
messages in flight end (:mod:`app.worker.pipeline`), then marks its metrics
files dead. The main process of a pool without children (``solo``,
``threads``) stops its pipeline when the worker shuts down.
"""

from __future__ import annotations

import os

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from prometheus_client import multiprocess

from app.worker.pipeline import EXIT_TO_SHED_ABANDONED_RUNS, stop_this_process_pipelines

_pool_process_pid = 0


def in_pool_process() -> bool:
    """Whether this is a child of Celery's prefork pool, which the pool replaces when it exits."""
    return _pool_process_pid == os.getpid()


def restart_pool_process() -> None:
    """Exit this pool process at once; the pool starts a fresh one."""
    _mark_metrics_dead()
    os._exit(EXIT_TO_SHED_ABANDONED_RUNS)


@worker_process_init.connect
def _pool_process_started(**_: object) -> None:
    global _pool_process_pid
    _pool_process_pid = os.getpid()


@worker_process_shutdown.connect
def _pool_process_stopping(**_: object) -> None:
    stop_this_process_pipelines()
    _mark_metrics_dead()


@worker_shutdown.connect
def _worker_stopping(**_: object) -> None:
    stop_this_process_pipelines()


def _mark_metrics_dead() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())
