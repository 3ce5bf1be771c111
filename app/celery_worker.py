"""Entry point for ``celery -A app.celery_worker.celery worker``."""

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
