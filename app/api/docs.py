"""``GET /docs``: Swagger UI over ``/openapi.json``, its assets served from the installed package.

The ``flask-swagger-ui`` wheel carries Swagger UI's files, so the page needs no
CDN and works without internet access.
"""

from __future__ import annotations

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

from app.auth.access import Access, requires

DOCS_PATH = "/docs"


def init_app(app: Flask) -> None:
    """Serve the docs page at ``/docs/`` (``/docs`` redirects there)."""
    config = {"app_name": "N3Hub API", "persistAuthorization": True}
    blueprint = get_swaggerui_blueprint(
        DOCS_PATH, "/openapi.json", config=config, blueprint_name="docs"
    )
    app.register_blueprint(blueprint)
    # The package's view cannot carry the decorator; the page and its files are open to all.
    requires(Access.PUBLIC)(app.view_functions["docs.show"])
