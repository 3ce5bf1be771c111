"""Alembic environment: runs migrations on the app's engine, one migrator at a time."""

from alembic import context
from flask import current_app

from app.database import WRITE_OPTION, migration_lock

target_db = current_app.extensions["migrate"].db


def run_migrations_offline() -> None:
    """Emit the migration SQL as a script instead of running it."""
    context.configure(
        url=target_db.engine.url.render_as_string(hide_password=False),
        target_metadata=target_db.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations inside one locked transaction on the app's engine."""
    with target_db.engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        context.configure(
            connection=connection,
            target_metadata=target_db.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transactional_ddl=True,
        )
        with migration_lock(connection), context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
