"""Flask's side of the declared schemas: request bodies, query strings and JSON responses.

The shapes and their rules live in ``app/api/schemas.py``; this module takes
them from a Flask request and gives the answer back as a Flask response.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Request, Response
from pydantic import BaseModel, TypeAdapter

from app.api.errors import APIError
from app.api.schemas import IDEMPOTENCY_HEADER, idempotency_key, json_bytes, parse_body

JSON_MIMETYPE = "application/json"
Model = TypeVar("Model", bound=BaseModel)


def json_body(request: Request, model: type[Model], maximum: int | None = None) -> Model:
    """The request body validated against ``model``, or a 4xx APIError saying what is wrong."""
    if request.mimetype != JSON_MIMETYPE:
        raise APIError(
            415,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json.",
        )
    body = request.get_data(cache=False)
    if request.content_length is None and _went_past_the_limit(request, len(body)):
        raise APIError(
            413, "payload_too_large", f"The body is larger than {request.max_content_length} bytes."
        )
    return parse_body(model, body, maximum)


def _went_past_the_limit(request: Request, read: int) -> bool:
    """Whether a body without ``Content-Length`` (chunked) went on past the limit.

    Werkzeug stops reading such a body at ``MAX_CONTENT_LENGTH`` without a word,
    and a body cut there could even parse as JSON.
    """
    limit = request.max_content_length
    return limit is not None and read >= limit and bool(request.environ["wsgi.input"].read(1))


def request_idempotency_key(request: Request) -> str | None:
    """The request's optional ``Idempotency-Key`` header, checked."""
    return idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))


def json_response(
    adapter: TypeAdapter[Any], value: Any, status: int = 200, headers: Any = None
) -> Response:
    """``value`` answered as JSON, serialised as ``adapter`` declares it."""
    return Response(json_bytes(adapter, value), status, headers, mimetype=JSON_MIMETYPE)
