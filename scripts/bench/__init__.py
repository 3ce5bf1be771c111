"""N3Hub's benchmark: ``make bench`` or ``python -m scripts.bench``.

One run measures, on a stack of its own (Redis, a fresh database, Gunicorn with
the project's config, a Celery worker with two pool processes): the requests/s
of a hello-world Flask app and of ``POST /messages``, the drain rate of a
backlog, created -> completed latency at paced rates, and the read endpoints
with a million stored messages. It prints a table with a verdict per target of
the specification and writes the figures to ``var/bench/results.json``.
``DATABASE_URL`` pointing at PostgreSQL, MySQL or MariaDB runs it on a fresh
``n3hub_bench`` database on that server; otherwise on SQLite in a temporary directory.
"""
