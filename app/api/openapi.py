"""``GET /openapi.json``: the API described as OpenAPI 3.1, built from the declared schemas.

Bodies, parameters and responses come from ``app/api/schemas.py`` (pydantic
writes JSON Schema 2020-12, which OpenAPI 3.1 uses as is), with the limits this
server runs with (batch size, page size, content length). The document is built once per app.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel, TypeAdapter

from app.api import schemas
from app.api.payloads import JSON_MIMETYPE
from app.auth.access import Access, requires
from app.logs import REQUEST_ID_HEADER

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"
ERROR_CODES = {
    400: ("invalid_json, validation_error", "The body or a parameter is not acceptable."),
    401: ("unauthorized", "The API key is missing or unknown (WWW-Authenticate: Bearer)."),
    403: ("forbidden", "The API key lacks the scope (or tenant) this operation needs."),
    404: ("not_found", "No such message (or route)."),
    408: ("request_timeout", "The body did not arrive within N3HUB_BODY_TIMEOUT seconds."),
    409: ("conflict", "The message's status does not allow this (retry: failed; cancel: pending)."),
    410: (
        "idempotent_message_gone",
        "What this Idempotency-Key created no longer exists; send a new key.",
    ),
    413: ("payload_too_large", "The body (chunked or not) is over N3HUB_MAX_BODY_BYTES."),
    415: ("unsupported_media_type", "Content-Type is not application/json."),
    422: ("idempotency_key_reused", "The Idempotency-Key was used with other content."),
    429: ("rate_limited", "Too many requests for this key; wait Retry-After seconds."),
    503: ("service_unavailable", "The database stayed busy; retry after Retry-After seconds."),
}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's X-Request-ID when usable, else a new one.",
        "schema": {"type": "string"},
    },
    "Location": {
        "description": "The URL of the message.",
        "schema": {"type": "string", "format": "uri-reference"},
    },
    "Idempotent-Replayed": {
        "description": "Present when the answer replays an earlier request's.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Limit": {
        "description": "Requests allowed in the current window.",
        "schema": {"type": "integer"},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer"},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window resets.",
        "schema": {"type": "integer"},
    },
    "Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}},
}
MESSAGE_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": schemas.MAX_ID},
    "example": 1,
}
_TENANT_SCHEMA = schemas.TenantQuery.model_json_schema()["properties"]["tenant"]
TENANT = {
    "name": "tenant",
    "in": "query",
    "required": False,
    "description": _TENANT_SCHEMA.pop("description"),
    "schema": _TENANT_SCHEMA,
}
LINKS = {
    "GetMessage": {
        "operationId": "getMessage",
        "parameters": {"message_id": "$response.body#/id"},
        "description": "The message just created.",
    },
    "RetryMessage": {
        "operationId": "retryMessage",
        "parameters": {"message_id": "$response.body#/id"},
        "description": "Send it back once it has failed.",
    },
}


class _Components:
    """The schemas the document references, gathered from pydantic one type at a time."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, name: str, kind: Any) -> dict[str, str]:
        """A reference to ``kind``'s schema, added under ``name``."""
        if name not in self.schemas:
            adapter = kind if isinstance(kind, TypeAdapter) else TypeAdapter(kind)
            schema = adapter.json_schema(ref_template=REF, mode=_mode(kind))
            self.schemas.update(schema.pop("$defs", {}))
            self.schemas[name] = schema
        return {"$ref": REF.format(model=name)}


def _mode(kind: Any) -> str:
    is_input = isinstance(kind, type) and issubclass(kind, BaseModel)
    return "validation" if is_input else "serialization"


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {JSON_MIMETYPE: content}


def _headers(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in (REQUEST_ID_HEADER, *names)}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _error_response(status: int, envelope: dict[str, str]) -> dict[str, Any]:
    codes, when = ERROR_CODES[status]
    headers = ("Retry-After",) if status in (429, 503) else ()
    if status == 429:
        headers += ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
    first_code = codes.split(", ")[0]
    example = {"error": {"code": first_code, "message": when}}
    return {
        "description": f"{when} (`code`: {codes})",
        "headers": _headers(*headers),
        "content": _json(envelope, example),
    }


def _operations(components: _Components, config: dict[str, Any]) -> dict[str, Any]:
    message = components.ref("MessageOut", schemas.MESSAGE)
    maximum, max_chars = config["MAX_BATCH_MESSAGES"], config["MAX_CONTENT_CHARS"]
    query = schemas.list_query(config["PAGE_SIZE"], config["MAX_PAGE_SIZE"])
    query_schema = query.model_json_schema(ref_template=REF)
    components.schemas.update(query_schema.pop("$defs", {}))
    created = {
        "description": "Stored (committed) and queued for processing.",
        "headers": _headers("Location"),
        "content": _json(message),
        "links": LINKS,
    }
    protected = (401, 403, 429, 503)
    return {
        "/messages": {
            "post": {
                "operationId": "createMessage",
                "summary": "Store a message",
                "description": "The row is committed before the answer. The same "
                "Idempotency-Key with the same content answers 200 with the first message.",
                "tags": ["messages"],
                "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                "requestBody": {
                    "required": True,
                    "content": _json(components.ref("MessageIn", schemas.message_in(max_chars))),
                },
                "responses": {
                    "201": created,
                    "200": {
                        "description": "An idempotent replay: the first request's message.",
                        "headers": _headers("Location", "Idempotent-Replayed"),
                        "content": _json(message),
                    },
                    **_errors(400, 408, 410, 413, 415, 422, *protected),
                },
            },
            "get": {
                "operationId": "listMessages",
                "summary": "List messages, newest first, a page at a time",
                "description": "Follow `next_cursor` (pass it as `cursor`) until it is null.",
                "tags": ["messages"],
                "parameters": [
                    {
                        "name": name,
                        "in": "query",
                        "required": False,
                        "schema": schema,
                        **(
                            {"description": schema["description"]}
                            if "description" in schema
                            else {}
                        ),
                    }
                    for name, schema in query_schema["properties"].items()
                ],
                "responses": {
                    "200": {
                        "description": "A page of messages.",
                        "headers": _headers(),
                        "content": _json(components.ref("MessagePage", schemas.MESSAGE_PAGE)),
                    },
                    **_errors(400, *protected),
                },
            },
        },
        "/messages/batch": {
            "post": {
                "operationId": "createMessages",
                "summary": f"Store up to {maximum} messages in one transaction",
                "description": "All of them or none, in order; one invalid item rejects the "
                "batch (`details.field` names it). Each message counts against the rate limit. "
                "The same Idempotency-Key with the same batch answers 200 with the first messages.",
                "tags": ["messages"],
                "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        components.ref("BatchIn", schemas.batch_in(maximum, max_chars))
                    ),
                },
                "responses": {
                    "201": {
                        "description": "Stored, in the order sent.",
                        "headers": _headers(),
                        "content": _json(components.ref("MessageList", schemas.MESSAGE_LIST)),
                        "links": {
                            "GetFirstMessage": {
                                "operationId": "getMessage",
                                "parameters": {"message_id": "$response.body#/messages/0/id"},
                            }
                        },
                    },
                    "200": {
                        "description": "An idempotent replay: the first request's messages.",
                        "headers": _headers("Idempotent-Replayed"),
                        "content": _json(components.ref("MessageList", schemas.MESSAGE_LIST)),
                    },
                    **_errors(400, 408, 410, 413, 415, 422, *protected),
                },
            }
        },
        "/messages/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Counts by status",
                "tags": ["messages"],
                "parameters": [TENANT],
                "responses": {
                    "200": {
                        "description": "`total` is the sum of the five statuses.",
                        "headers": _headers(),
                        "content": _json(components.ref("Stats", schemas.STATS)),
                    },
                    **_errors(400, *protected),
                },
            }
        },
        "/messages/{message_id}": {
            "get": {
                "operationId": "getMessage",
                "summary": "One message with its processing facts",
                "tags": ["messages"],
                "parameters": [MESSAGE_ID, TENANT],
                "responses": {
                    "200": {
                        "description": "The message.",
                        "headers": _headers(),
                        "content": _json(message),
                    },
                    **_errors(400, 404, *protected),
                },
            }
        },
        "/messages/{message_id}/attempts": {
            "get": {
                "operationId": "getMessageAttempts",
                "summary": "A message's attempts, oldest first",
                "description": "How each attempt ended, when, on which worker, and why it did not "
                "complete; only the newest N3HUB_ATTEMPTS_KEPT are kept.",
                "tags": ["messages"],
                "parameters": [MESSAGE_ID, TENANT],
                "responses": {
                    "200": {
                        "description": "The attempts.",
                        "headers": _headers(),
                        "content": _json(components.ref("AttemptList", schemas.ATTEMPT_LIST)),
                    },
                    **_errors(400, 404, *protected),
                },
            }
        },
        "/messages/{message_id}/retry": {
            "post": {
                "operationId": "retryMessage",
                "summary": "Send a failed message back to pending",
                "description": "Its attempts start again from 0; 409 for any other status.",
                "tags": ["messages"],
                "parameters": [MESSAGE_ID],
                "responses": {
                    "202": {
                        "description": "Pending again, queued for processing.",
                        "headers": _headers(),
                        "content": _json(message),
                    },
                    **_errors(404, 409, *protected),
                },
            }
        },
        "/messages/{message_id}/cancel": {
            "post": {
                "operationId": "cancelMessage",
                "summary": "Cancel a pending (or scheduled) message",
                "description": "It becomes `cancelled` and is never processed; 409 for any "
                "other status. Needs the `admin` scope.",
                "tags": ["messages"],
                "parameters": [MESSAGE_ID],
                "responses": {
                    "200": {
                        "description": "Cancelled.",
                        "headers": _headers(),
                        "content": _json(message),
                    },
                    **_errors(404, 409, *protected),
                },
            }
        },
        "/messages/retry": {
            "post": {
                "operationId": "retryMessages",
                "summary": "Send failed messages back to pending in bulk",
                "description": "Failed messages whose failure lies in `[since, until)`, oldest "
                "first, up to `limit`, in transactions of a few hundred rows; `more` says "
                "whether matching ones remain. Needs the `admin` scope.",
                "tags": ["messages"],
                "requestBody": {
                    "required": True,
                    "content": _json(components.ref("RedriveIn", schemas.RedriveIn)),
                },
                "responses": {
                    "200": {
                        "description": "How many went back to pending.",
                        "headers": _headers(),
                        "content": _json(components.ref("RedriveOut", schemas.REDRIVE)),
                    },
                    **_errors(400, 408, 413, 415, *protected),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics, in Prometheus's text format",
                "description": "With N3HUB_METRICS_TOKEN set, it is the bearer token this "
                "needs; without one, open in development, an admin key in production.",
                "tags": ["health"],
                "security": [{SECURITY_SCHEME: []}, {}],
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "headers": _headers(),
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 403),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "headers": _headers(),
                        "content": _json({"type": "object"}),
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "getLiveness",
                "summary": "Liveness: the process answers",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Alive.",
                        "headers": _headers(),
                        "content": _json(components.ref("Liveness", schemas.Liveness)),
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "getReadiness",
                "summary": "Readiness: the database and the broker answer",
                "tags": ["health"],
                "security": [],
                "responses": {
                    status: {
                        "description": text,
                        "headers": _headers(),
                        "content": _json(components.ref("Readiness", schemas.Readiness)),
                    }
                    for status, text in (("200", "Ready."), ("503", "Not ready; `error` says why."))
                },
            }
        },
    }


def build_document(config: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app with ``config``."""
    components = _Components()
    paths = _operations(components, config)
    envelope = components.ref("ErrorEnvelope", schemas.ErrorEnvelope)
    key_schema = TypeAdapter(schemas.IdempotencyKey).json_schema()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "N3Hub",
            "version": "1.0.0",
            "description": "Messages stored durably and processed asynchronously. Every error "
            'has one shape: `{"error": {"code", "message", "details"}}`.',
        },
        "servers": [{"url": "/"}],
        "security": [{SECURITY_SCHEME: []}],
        "tags": [
            {"name": "messages", "description": "Submit messages and follow their processing."},
            {"name": "health", "description": "Probes for orchestrators; no key needed."},
        ],
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer <key>` (`flask keys "
                    "create`; `make run` writes a development key to instance/dev-api-key).",
                }
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": schemas.IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": key_schema.pop("description"),
                    "schema": key_schema,
                }
            },
            "headers": HEADERS,
            "responses": {
                f"Error{status}": _error_response(status, envelope) for status in ERROR_CODES
            },
        },
    }


@bp.get("/openapi.json")
@requires(Access.PUBLIC)
def get_openapi() -> Response:
    """The OpenAPI 3.1 document of this server."""
    document = current_app.extensions["openapi"]
    return Response(document, mimetype=JSON_MIMETYPE)


def init_app(app: Flask) -> None:
    """Serve the document at ``/openapi.json``, built once for the app's settings."""
    app.extensions["openapi"] = app.json.dumps(build_document(app.config))
    app.register_blueprint(bp)
