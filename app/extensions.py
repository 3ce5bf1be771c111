"""Unbound extension singletons; ``create_app`` binds them to an application."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()
