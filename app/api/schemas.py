"""The API's request and response shapes, declared once with pydantic.

These declarations validate what clients send (in the Flask views and in the
fast path alike), serialise what the API answers, and are the source of the
OpenAPI document (``app/api/openapi.py``). A failed validation becomes the
JSON error envelope here, so every caller answers it the same way.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from app.api.errors import APIError, validation_error
from app.auth.keys import TENANT_PATTERN
from app.lifecycle import FailedFilter, utcnow
from app.models import AttemptOutcome, MessageStatus

# Ids and cursors beyond a signed 64-bit integer cannot exist in either database.
MAX_ID = 2**63 - 1
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
EXAMPLE_CONTENT = "Test message"
# Scheduled delivery: at most this far ahead (or behind), so a typo in a year cannot park a
# message forever.
MAX_SCHEDULE_SECONDS = 366 * 24 * 3600
SCHEDULE_FIELDS = ("deliver_at", "delay_seconds")
MAX_REDRIVE = 10_000  # messages per bulk redrive request, so one request stays short
# RFC 3339's date-time: a full date, a time with seconds, and a zone (Z or an offset).
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _storable(text: str) -> str:
    """Text every supported database stores: no NUL, no unpaired surrogate."""
    if "\x00" in text:
        raise PydanticCustomError("nul_character", "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "unpaired_surrogate", "contains an unpaired surrogate, which is not valid Unicode"
        ) from None
    return text


def _decimal_digits(value: Any) -> Any:
    """A query value as an int only when it is plain ASCII digits (no sign, space or '_')."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    raise PydanticCustomError("decimal_digits", "must be written in decimal digits")


def _content(max_chars: int) -> Any:
    """A message's text: 1 to ``max_chars`` characters, storable."""
    return Annotated[
        str,
        Field(
            min_length=1,
            max_length=max_chars,
            description="Any Unicode text, stored and returned exactly; no NUL character.",
            examples=[EXAMPLE_CONTENT],
            json_schema_extra={"pattern": "^[^\\u0000]*$"},  # checked by _storable, not a regex
        ),
        AfterValidator(_storable),
    ]


def _rfc3339(value: Any) -> datetime:
    """An RFC 3339 date-time with its zone, e.g. ``2026-12-01T09:00:00Z``, in UTC."""
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc3339", "must be an RFC 3339 date-time with a zone, e.g. 2026-12-01T09:00:00Z"
        )
    # fromisoformat takes at most microseconds; finer digits are cut, not rounded.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z"))
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # February 30; or year 1 moved west of UTC
        raise PydanticCustomError("rfc3339", "is not a real date-time") from None


def _near(moment: datetime) -> datetime:
    """A delivery time within ``MAX_SCHEDULE_SECONDS`` of now."""
    if abs(moment - utcnow()) > timedelta(seconds=MAX_SCHEDULE_SECONDS):
        raise PydanticCustomError(
            "schedule_range",
            f"must be within {MAX_SCHEDULE_SECONDS} seconds ({MAX_SCHEDULE_SECONDS // 86400} "
            "days) of now",
        )
    return moment


def _no_default(schema: dict[str, Any]) -> None:
    """Leave an optional field's null default out of the schema: null itself is refused."""
    schema.pop("default", None)


Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str)]
DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]
DeliverAt = Annotated[
    DateTime,
    AfterValidator(_near),
    Field(
        description="Hold the message back until then (RFC 3339 with a zone, within "
        f"{MAX_SCHEDULE_SECONDS // 86400} days of now); a past time is due at once.",
        json_schema_extra=_no_default,
    ),
]
DelaySeconds = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_SCHEDULE_SECONDS,
        allow_inf_nan=False,
        description="Hold the message back this many seconds; not with deliver_at.",
        examples=[90],
        json_schema_extra=_no_default,
    ),
]
Count = Annotated[int, Field(ge=0)]
StatusName = Literal[tuple(status.value for status in MessageStatus)]  # type: ignore[valid-type]
OutcomeName = Literal[tuple(outcome.value for outcome in AttemptOutcome)]  # type: ignore[valid-type]


class MessageIn(BaseModel):
    """The body of ``POST /messages``, and one item of a batch; see :func:`message_in`."""

    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [{"content": "Hi"}]})

    content: str
    deliver_at: DeliverAt = None
    delay_seconds: DelaySeconds = None

    @model_validator(mode="after")
    def _one_schedule(self) -> MessageIn:
        if set(SCHEDULE_FIELDS) <= self.model_fields_set:
            raise PydanticCustomError(
                "schedule_conflict", "Give 'deliver_at' or 'delay_seconds', not both"
            )
        return self

    @property
    def scheduled(self) -> bool:
        """Whether the message asks to be held back."""
        return bool(self.model_fields_set & set(SCHEDULE_FIELDS))

    def delivery_time(self) -> datetime | None:
        """When the message is due: ``deliver_at``, now plus ``delay_seconds``, or None."""
        if self.delay_seconds is not None:
            return utcnow() + timedelta(seconds=self.delay_seconds)
        return self.deliver_at


@lru_cache
def message_in(max_chars: int) -> type[MessageIn]:
    """:class:`MessageIn` with a ``content`` of at most ``max_chars``."""
    return create_model(
        "MessageIn",
        __base__=MessageIn,
        __doc__="A message to store.",
        content=(_content(max_chars), ...),
    )


class RedriveIn(BaseModel):
    """The body of ``POST /messages/retry``: which failed messages go back to pending."""

    model_config = ConfigDict(
        strict=True, json_schema_extra={"examples": [{"since": "2026-11-30T00:00:00Z"}]}
    )

    status: Literal["failed"] = Field(
        "failed", description="Only failed messages are retried in bulk."
    )
    since: DateTime = Field(
        None,
        description="Failed at or after this time (RFC 3339 with a zone).",
        json_schema_extra=_no_default,
    )
    until: DateTime = Field(
        None,
        description="Failed before this time (RFC 3339 with a zone).",
        json_schema_extra=_no_default,
    )
    limit: int = Field(
        MAX_REDRIVE, ge=1, le=MAX_REDRIVE, description="At most this many are retried."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RedriveIn:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise PydanticCustomError("time_order", "'since' must be before 'until'")
        return self

    def failed_filter(self) -> FailedFilter:
        """The failed messages this asks for."""
        return FailedFilter(since=self.since, until=self.until)


class RedriveOut(TypedDict):
    """How many failed messages went back to pending."""

    retried: Count
    more: Annotated[bool, Field(description="Whether matching failed messages remain.")]


class MessageOut(TypedDict):
    """A message and its processing facts, as every endpoint answers it."""

    id: Annotated[int, Field(ge=1, examples=[1])]
    status: StatusName
    content: str
    attempts: Annotated[int, Field(ge=0, description="Claims so far (a recovery counts as one).")]
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Annotated[Timestamp | None, Field(description="When the last claim began.")]
    completed_at: Annotated[
        Timestamp | None, Field(description="When processing ended, success or failure.")
    ]
    deliver_at: Annotated[
        Timestamp | None, Field(description="When it is due (UTC), if it was scheduled.")
    ]
    last_error: Annotated[str | None, Field(description="Why the last attempt failed.")]
    result: Annotated[Any, Field(description="What the processor returned (any JSON).")]


class AttemptOut(TypedDict):
    """One ended attempt of a message."""

    number: Annotated[
        int,
        Field(ge=1, description="The message's attempts count then; a retry starts again at 1."),
    ]
    started_at: Annotated[Timestamp, Field(description="When the claim began.")]
    ended_at: Annotated[
        Timestamp,
        Field(description="When the run ended, was given up (a timeout) or was taken back."),
    ]
    duration_seconds: Annotated[float, Field(ge=0, description="From started_at to ended_at.")]
    outcome: Annotated[
        OutcomeName,
        Field(
            description="completed; failed (the message failed); retried (it waits for another "
            "attempt); timed_out; recovered (its worker was lost); released (its worker stopped)."
        ),
    ]
    error: Annotated[str | None, Field(description="Why it did not complete (500 characters).")]
    worker: Annotated[
        str | None,
        Field(description="The worker process that held it, host:pid.", examples=["worker-1:4242"]),
    ]


class AttemptList(TypedDict):
    """A message's attempts, oldest first: the newest ``N3HUB_ATTEMPTS_KEPT`` are kept."""

    message_id: Annotated[int, Field(ge=1, examples=[1])]
    attempts: list[AttemptOut]


class MessageList(TypedDict):
    """The stored messages of a batch, in the order sent."""

    messages: list[MessageOut]


class MessagePage(TypedDict):
    """One page of messages, newest first."""

    messages: list[MessageOut]
    limit: Annotated[int, Field(ge=1, description="The page size used.")]
    next_cursor: Annotated[
        str | None,
        Field(
            description="Pass it as ?cursor= for the next page; null on the last page.",
            examples=["123"],
        ),
    ]


class Stats(TypedDict):
    """Message counts by status; ``total`` is their sum."""

    total: Count
    pending: Count
    processing: Count
    completed: Count
    failed: Count
    cancelled: Count


class ErrorBody(TypedDict):
    """What went wrong: a stable code for programs, a message for people, details."""

    code: Annotated[str, Field(examples=["validation_error"])]
    message: Annotated[str, Field(examples=["'content' must be a string."])]
    details: NotRequired[Annotated[Any, Field(examples=[{"field": "content"}])]]


class ErrorEnvelope(TypedDict):
    """Every error the API answers has this one shape."""

    error: ErrorBody


class Liveness(TypedDict):
    """The process answers."""

    status: Literal["ok"]


class Readiness(TypedDict):
    """Whether the database and the broker answer; ``error`` names what is down."""

    status: Literal["ok", "unavailable"]
    checks: Annotated[dict[str, str], Field(examples=[{"database": "ok", "broker": "ok"}])]
    error: NotRequired[ErrorBody]


IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes a retried create safe: the same key with the same body answers the "
        "first result and writes nothing; with another body it is a 422.",
    ),
]


@lru_cache
def batch_in(maximum: int, max_chars: int) -> type[BaseModel]:
    """The body of ``POST /messages/batch``: up to ``maximum`` messages of ``max_chars`` each."""
    messages = Annotated[list[message_in(max_chars)], Field(min_length=1, max_length=maximum)]
    return create_model(
        "BatchIn",
        __config__=ConfigDict(
            strict=True, json_schema_extra={"examples": [{"messages": [{"content": "Hi"}]}]}
        ),
        __doc__="Up to the server's maximum of messages, stored in one transaction.",
        messages=(messages, ...),
    )


def _query_int(maximum: int, description: str) -> Any:
    """An integer query parameter in 1..maximum, written in plain decimal digits."""
    return Annotated[
        int, Field(ge=1, le=maximum, description=description), BeforeValidator(_decimal_digits)
    ]


Tenant = Annotated[str, Field(pattern=f"^{TENANT_PATTERN.pattern}$")]


class TenantQuery(BaseModel):
    """The query of the reads other than the listing: the optional ``tenant``."""

    model_config = ConfigDict(extra="ignore")

    tenant: Tenant | None = Field(
        None,
        description="Only this tenant's messages (admin keys; other keys may name only their own).",
    )


@lru_cache
def list_query(default_limit: int, max_limit: int) -> type[BaseModel]:
    """The query of ``GET /messages``: ``limit``, ``cursor``, ``status`` and ``tenant``."""
    return create_model(
        "ListQuery",
        __base__=TenantQuery,
        limit=(_query_int(max_limit, "Page size."), default_limit),
        cursor=(_query_int(MAX_ID, "The previous page's next_cursor.") | None, None),
        status=(MessageStatus | None, Field(None, description="Only messages in this status.")),
    )


_IDEMPOTENCY_KEY = TypeAdapter(IdempotencyKey)


def _field_path(location: tuple[int | str, ...]) -> str:
    """``("messages", 3, "content")`` as ``messages[3].content``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


# Errors about two fields at once, and the fields they name.
_FIELD_PAIRS = {"schedule_conflict": SCHEDULE_FIELDS, "time_order": ("since", "until")}


def _body_error(error: ValidationError, body: Any, maximum: int | None) -> APIError:
    """The envelope for a body that failed its declaration; the first problem is named."""
    problem = error.errors(include_url=False)[0]
    location, kind = tuple(problem["loc"]), problem["type"]
    if kind in _FIELD_PAIRS:
        fields = [_field_path((*location, name)) for name in _FIELD_PAIRS[kind]]
        return validation_error(f"{problem['msg']}.", {"fields": fields})
    if not location:
        return validation_error("The body must be a JSON object.", {"got": type(body).__name__})
    field = _field_path(location)
    if location[0] == "messages" and len(location) <= 2 and kind != "model_type":
        text = f"'messages' must be a list of 1 to {maximum} objects."
        return validation_error(text, {"field": "messages"})
    if kind == "model_type":
        return validation_error(f"{field} must be an object.", {"field": field})
    name = f"'{location[-1]}'"
    if kind == "string_too_long":
        most = problem["ctx"]["max_length"]
        text = f"{name} is longer than {most} characters."
        return validation_error(text, {"field": field, "max_characters": most})
    messages = {
        "missing": f"{name} is required.",
        "string_type": f"{name} must be a string.",
        "string_too_short": f"{name} must not be empty.",
        "literal_error": f"{name} must be {problem.get('ctx', {}).get('expected')}.",
    }
    text = messages.get(kind, f"{name} {problem['msg']}.")
    return validation_error(text, {"field": field})


def parse_body(model: type[BaseModel], raw: bytes, maximum: int | None = None) -> Any:
    """A request body validated against ``model``, or the 400 APIError saying what is wrong.

    pydantic-core parses and validates the JSON in one pass. Its parser also
    refuses lone surrogate escapes, which JSON's grammar allows, and reads the
    bare words ``NaN`` and ``Infinity``, which it does not; so a body it refuses,
    or one holding those words, is parsed by :func:`strict_json` instead, to tell
    invalid JSON from valid JSON that holds a value we cannot store.
    """
    if b"NaN" not in raw and b"Infinity" not in raw:
        try:
            return model.model_validate_json(raw)
        except ValidationError as error:
            if error.errors()[0]["type"] != "json_invalid":
                raise _body_error(error, json.loads(raw), maximum) from None
    body = strict_json(raw)
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise _body_error(error, body, maximum) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON in UTF-8 without a byte order mark, no ``NaN``/``Infinity``; or a 400.

    ``json.loads`` of bytes would guess UTF-16 or UTF-32, and would read
    ``NaN``/``Infinity``, which are not JSON and which no other client could read back.
    """
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise APIError(
            400, "invalid_json", "The body is not valid JSON in UTF-8 (without a BOM)."
        ) from None


def parse_query(model: type[BaseModel], args: Any) -> Any:
    """Query parameters validated against ``model``, or a 400 naming the parameter."""
    try:
        return model.model_validate(
            {name: args.get(name) for name in model.model_fields if name in args}
        )
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        name = str(problem["loc"][0])
        raw = args.get(name)
        if name == "status":
            allowed = [status.value for status in MessageStatus]
            raise validation_error(
                f"Unknown status {raw!r}; use one of: {', '.join(allowed)}.",
                {"field": "status", "allowed": allowed},
            ) from None
        if name == "tenant":
            text = "'tenant' must be 1 to 64 of A-Z a-z 0-9 . _ -"
            raise validation_error(text, {"field": "tenant", "got": raw[:64]}) from None
        bounds = model.model_json_schema()["properties"][name]
        bounds = next((b for b in bounds.get("anyOf", [bounds]) if "maximum" in b), bounds)
        raise validation_error(
            f"'{name}' must be an integer from 1 to {bounds['maximum']}.",
            {"field": name, "got": raw[:32]},
        ) from None


def idempotency_key(value: str | None) -> str | None:
    """The optional ``Idempotency-Key`` header: 1-255 printable ASCII characters."""
    if value is None:
        return None
    try:
        return _IDEMPOTENCY_KEY.validate_python(value)
    except ValidationError:
        raise validation_error(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
            "characters.",
            {"header": IDEMPOTENCY_HEADER},
        ) from None


MESSAGE_FIELDS = tuple(MessageOut.__annotations__)
MESSAGE = TypeAdapter(MessageOut)
MESSAGE_LIST = TypeAdapter(MessageList)
ATTEMPT_LIST = TypeAdapter(AttemptList)
MESSAGE_PAGE = TypeAdapter(MessagePage)
STATS = TypeAdapter(Stats)
REDRIVE = TypeAdapter(RedriveOut)


def json_bytes(adapter: TypeAdapter[Any], value: Any) -> bytes:
    """``value`` serialised as ``adapter`` declares it, compact, with Flask's closing newline."""
    return adapter.dump_json(value) + b"\n"


def message_out(row: dict[str, Any]) -> dict[str, Any]:
    """A message row with its public fields in their declared order (pydantic keeps the row's)."""
    return {field: row[field] for field in MESSAGE_FIELDS}


def attempt_out(row: dict[str, Any]) -> dict[str, Any]:
    """An attempt row as the API answers it."""
    # Two hosts' clocks (a lost worker's claim, the sweep that took it back) may disagree.
    duration = max((row["ended_at"] - row["started_at"]).total_seconds(), 0.0)
    return {
        "number": row["number"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "duration_seconds": duration,
        "outcome": row["outcome"],
        "error": row["error"],
        "worker": row["worker"],
    }


def message_json_size(row: dict[str, Any]) -> int:
    """How many bytes a row takes in a response (its content and result dominate)."""
    return len(json_bytes(MESSAGE, message_out(row)))
