"""GET /openapi.json (valid OpenAPI 3.1, every route, every error in its envelope) and GET /docs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from app import create_app
from app.config import load_config
from app.extensions import db
from tests.conftest import keyed_client, stack_environment
from tests.support.processes import RedisServer

UNDOCUMENTED = {"static", "docs.show", "openapi.get_openapi"}
ENVELOPE = "#/components/schemas/ErrorEnvelope"


@pytest.fixture
def document(client: FlaskClient) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(document: dict) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1.")


def test_every_route_and_method_is_documented(app: Flask, document: dict) -> None:
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in {"static", "docs.show"} and not rule.endpoint.startswith("console.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented


def test_every_error_answer_is_the_envelope_with_its_headers(document: dict) -> None:
    responses = document["components"]["responses"]
    statuses = set()
    for item in document["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                assert "X-Request-ID" in response.get("headers", {}) or "$ref" in response
                if status.startswith(("4", "5")) and "$ref" in response:
                    statuses.add(status)
                    error = responses[response["$ref"].rsplit("/", 1)[1]]
                    assert error["content"]["application/json"]["schema"] == {"$ref": ENVELOPE}
                    assert "X-Request-ID" in error["headers"]
    assert {"400", "404", "409", "413", "415", "422", "429", "503"} <= statuses
    for status in ("429", "503"):
        assert "Retry-After" in responses[f"Error{status}"]["headers"]
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
        responses["Error429"]["headers"]
    )


def test_creates_document_location_idempotency_links_and_pagination(document: dict) -> None:
    create = document["paths"]["/messages"]["post"]
    assert "Location" in create["responses"]["201"]["headers"]
    assert "Idempotent-Replayed" in create["responses"]["200"]["headers"]
    key = document["components"]["parameters"]["IdempotencyKey"]
    assert (key["in"], key["name"], key["schema"]["maxLength"]) == (
        "header",
        "Idempotency-Key",
        255,
    )
    links = create["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {"getMessage", "retryMessage"}
    listing = document["paths"]["/messages"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor", "status", "tenant"}
    page = document["components"]["schemas"]["MessagePage"]
    assert "next_cursor" in page["required"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_security_answers_are_documented(document: dict) -> None:
    paths = document["paths"]
    batch = paths["/messages/batch"]["post"]
    assert "Idempotent-Replayed" in batch["responses"]["200"]["headers"]
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in batch["parameters"]
    for create in (batch, paths["/messages"]["post"]):
        assert {"410", "413", "422", "429"} <= set(create["responses"])
    for read in (paths["/messages/stats"]["get"], paths["/messages/{message_id}"]["get"]):
        (tenant,) = [p for p in read["parameters"] if p["name"] == "tenant"]
        assert tenant["in"] == "query" and "400" in read["responses"]
    content = document["components"]["schemas"]["MessageIn"]["properties"]["content"]
    assert content["maxLength"] == 100_000


@pytest.fixture
def small_app(tmp_path, redis_server: RedisServer) -> Iterator[Flask]:
    env = stack_environment(
        f"sqlite:///{tmp_path / 'small.db'}",
        redis_server.url,
        N3HUB_MAX_BATCH_MESSAGES="7",
        N3HUB_PAGE_SIZE="5",
        N3HUB_MAX_PAGE_SIZE="9",
    )
    app = create_app(load_config(env))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_the_declared_limits_are_the_servers_settings(small_app: Flask) -> None:
    document = small_app.test_client().get("/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    assert schemas["BatchIn"]["properties"]["messages"]["maxItems"] == 7
    (limit,) = [
        p for p in document["paths"]["/messages"]["get"]["parameters"] if p["name"] == "limit"
    ]
    assert (limit["schema"]["default"], limit["schema"]["maximum"]) == (5, 9)


def test_the_declarations_validate_what_they_describe(small_app: Flask) -> None:
    client = keyed_client(small_app)
    too_many = {"messages": [{"content": "x"}] * 8}
    response = client.post("/messages/batch", json=too_many)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {"field": "messages"}
    assert client.get("/messages?limit=10").status_code == 400
    assert client.get("/messages?limit=9").get_json()["limit"] == 9


def test_the_docs_page_uses_only_its_own_assets(client: FlaskClient) -> None:
    assert client.get("/docs").status_code == 308
    page = client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 4
    assert '"url": "/openapi.json"' in html
    assert "//" not in "".join(assets)  # no other host, no CDN
    for asset in assets:
        with client.get(asset) as response:
            assert response.status_code == 200, asset
            assert len(response.get_data()) > 0
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
