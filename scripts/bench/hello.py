"""A hello-world Flask app: the ceiling that ``POST /messages`` is compared with.

Run under the same settings as the service: ``gunicorn -c gunicorn.conf.py
scripts.bench.hello:app`` (the positional app replaces the config's ``wsgi_app``).
"""

from flask import Flask

GREETING = "Hello, World!"

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    """The smallest useful answer."""
    return GREETING
