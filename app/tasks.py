"""Celery tasks. They are thin: the work lives in :mod:`app.worker.drain`."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from app.wakeups import DRAIN_TASK
from app.worker import drain


@shared_task(name=DRAIN_TASK, ignore_result=True)
def drain_messages() -> int:
    """Process pending messages from the database in batches."""
    drain_requests = current_app.extensions["drain_requests"]
    drain_requests.started()
    return drain.drain(drain_requests)
