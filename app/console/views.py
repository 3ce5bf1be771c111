"""The console's pages: login, overview, messages, one message, bulk redrive."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from pydantic import TypeAdapter, ValidationError

from app import activity, lifecycle, queries
from app.api.schemas import MAX_ID, MAX_REDRIVE, DateTime, attempt_out, message_json_size
from app.auth.access import Access, requires
from app.auth.keys import Scope, find_active, hash_key
from app.console import charts, session
from app.models import MessageStatus

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
PAGE_SIZE = 50
OPEN_ENDPOINTS = frozenset({"console.login_form", "console.log_in"})
# What a browser's datetime-local input sends: no zone; the console reads it as UTC.
BROWSER_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?", re.ASCII)
FIELD_TIME = "%Y-%m-%dT%H:%M:%S"
_TIME = TypeAdapter(DateTime)


class Refused(Exception):
    """A console request answered with a short HTML page instead of the API's JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@bp.errorhandler(Refused)
def _refused(error: Refused) -> tuple[str, int]:
    return render_template("console/refused.html", message=error.message), error.status


@bp.before_request
def _require_login() -> Response | None:
    g.console_session = session.load()
    if request.method == "POST" and not session.csrf_matches(
        g.console_session, request.form.get("csrf")
    ):
        raise Refused(400, "The form has expired or did not come from this console; reload it.")
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    g.operator = session.operator(g.console_session)
    if g.operator is None:
        return redirect(url_for("console.login_form"))
    return None


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    current = g.get("console_session")
    return {"csrf": current.csrf if current else "", "operator": g.get("operator")}


@bp.get("/login")
@requires(Access.CONSOLE)
def login_form() -> Response:
    """The login page; gives the browser a session (not logged in yet) for its CSRF token."""
    current = g.console_session or session.fresh()
    g.console_session = current
    response = Response(render_template("console/login.html", error=None))
    session.save(response, current)
    return response


@bp.post("/login")
@requires(Access.CONSOLE)
def log_in() -> Response:
    """Log in with an API key that has the admin scope."""
    key = request.form.get("api_key", "").strip()
    stored = find_active(hash_key(key)) if key else None
    if stored is None or Scope.ADMIN not in stored.scopes:
        page = render_template("console/login.html", error="Unknown key, or not an admin key.")
        return Response(page, 401)
    response = redirect(url_for("console.overview"))
    session.save(response, session.fresh(stored.id))  # a new token at each login
    return response


@bp.post("/logout")
@requires(Access.CONSOLE)
def log_out() -> Response:
    """End the session."""
    response = redirect(url_for("console.login_form"))
    session.clear(response)
    return response


@bp.get("/")
@requires(Access.CONSOLE)
def overview() -> str:
    """Counts by status, the oldest waiting message, the last hour's throughput, live workers."""
    now = lifecycle.utcnow()
    oldest = queries.oldest_pending_created_at()
    backlog_age = (now - oldest).total_seconds() if oldest else 0.0
    minutes = activity.throughput(now)
    workers = activity.alive(now)
    return render_template(
        "console/overview.html",
        stats=queries.message_stats(),
        backlog_age=backlog_age,
        hour=_hour_totals(minutes),
        **_charts(minutes, now),
        workers=workers,
        slots=sum(worker.slots for worker in workers),
        in_flight=sum(worker.in_flight for worker in workers),
        alive_seconds=activity.ALIVE_SECONDS,
        now=now,
    )


def _hour_totals(minutes: list[activity.MinuteCounts]) -> activity.MinuteCounts | None:
    if not minutes:
        return None
    completed = sum(minute.completed for minute in minutes)
    return activity.MinuteCounts(
        minutes[0].minute, completed, sum(minute.failed for minute in minutes)
    )


def _charts(minutes: list[activity.MinuteCounts], now: datetime) -> dict[str, charts.Chart]:
    """Completed per minute and the failure rate, one bar a minute over the last hour."""
    first = now.replace(second=0, microsecond=0) - activity.CHART_MINUTES * activity.MINUTE

    def slot(minute: activity.MinuteCounts) -> int:
        return int((minute.minute - first) / activity.MINUTE)

    def at(minute: activity.MinuteCounts) -> str:
        return minute.minute.strftime("%H:%M UTC")

    completed = [
        (slot(m), m.completed, f"{at(m)}: {m.completed:,} completed, {m.failed:,} failed")
        for m in minutes
    ]
    rates = [
        (
            slot(m),
            m.failure_rate,
            f"{at(m)}: {m.failure_rate:.1%} failed of {m.completed + m.failed:,}",
        )
        for m in minutes
        if m.failure_rate is not None
    ]
    return {
        "completed_chart": charts.bar_chart(
            completed, activity.CHART_MINUTES, lambda top: f"{top:,.0f}/min"
        ),
        "failure_chart": charts.bar_chart(rates, activity.CHART_MINUTES, lambda top: f"{top:.1%}"),
    }


@bp.get("/messages")
@requires(Access.CONSOLE)
def messages() -> Response | str:
    """Messages newest first, a page at a time, filtered by status and created time; or one id."""
    go = request.args.get("go", "").strip()
    if go:
        if not go.isascii() or not go.isdigit() or not 1 <= int(go) <= MAX_ID:
            raise Refused(400, "A message id is a positive whole number.")
        return redirect(url_for("console.message", message_id=int(go)))
    status = _status_arg()
    cursor = _cursor_arg()
    created = _created_args()
    budget = (current_app.config["MAX_RESPONSE_BYTES"], message_json_size)
    page = queries.list_messages(PAGE_SIZE, cursor, status, budget=budget, created=created)
    filters = {
        "status": status.value if status else None,
        "since": created.since.strftime(FIELD_TIME) if created.since else None,
        "until": created.until.strftime(FIELD_TIME) if created.until else None,
    }
    return render_template(
        "console/messages.html",
        page=page,
        filters=filters,
        statuses=list(MessageStatus),
    )


@bp.get("/messages/<int:message_id>")
@requires(Access.CONSOLE)
def message(message_id: int) -> str:
    """One message: content, result, facts, its attempts, and the actions its status allows."""
    row = queries.get_message(message_id) if message_id <= MAX_ID else None
    if row is None:
        raise Refused(404, f"Message {message_id} does not exist.")
    attempts = [attempt_out(attempt) for attempt in queries.get_attempts(message_id)]
    return render_template(
        "console/message.html", message=row, attempts=attempts, done=request.args.get("done")
    )


@bp.post("/messages/<int:message_id>/retry")
@requires(Access.CONSOLE)
def retry(message_id: int) -> Response:
    """Send a failed message back to pending."""
    moved = lifecycle.retry_failed(message_id) if message_id <= MAX_ID else None
    if moved is not None:
        current_app.extensions["drain_requests"].request_soon()
    return _back_to(message_id, "retried" if moved else "not-retried")


@bp.post("/messages/<int:message_id>/cancel")
@requires(Access.CONSOLE)
def cancel(message_id: int) -> Response:
    """Cancel a pending message."""
    moved = lifecycle.cancel_pending(message_id) if message_id <= MAX_ID else None
    return _back_to(message_id, "cancelled" if moved else "not-cancelled")


@bp.get("/redrive")
@requires(Access.CONSOLE)
def redrive_form() -> str:
    """Choose since when failed messages go back to pending."""
    return render_template("console/redrive.html", step="choose", since=None, result=None)


@bp.post("/redrive")
@requires(Access.CONSOLE)
def redrive() -> str:
    """Confirm, then send back the failed messages that failed since the chosen time."""
    since = _since_field()
    if request.form.get("confirmed") != "yes":
        return render_template("console/redrive.html", step="confirm", since=since, result=None)
    retried, more = lifecycle.redrive_failed(lifecycle.FailedFilter(since=since), MAX_REDRIVE)
    if retried:
        current_app.extensions["drain_requests"].request_soon()
    return render_template(
        "console/redrive.html", step="done", since=since, result={"retried": retried, "more": more}
    )


def _back_to(message_id: int, done: str) -> Response:
    return redirect(url_for("console.message", message_id=message_id, done=done))


def _status_arg() -> MessageStatus | None:
    raw = request.args.get("status") or None
    if raw is None:
        return None
    try:
        return MessageStatus(raw)
    except ValueError:
        raise Refused(400, f"Unknown status {raw!r}.") from None


def _cursor_arg() -> int | None:
    raw = request.args.get("cursor") or None
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise Refused(400, "The page cursor is not valid.")
    return int(raw)


def _created_args() -> queries.CreatedRange:
    times = {
        name: _utc_time(raw, name)
        for name in ("since", "until")
        if (raw := request.args.get(name, "").strip())
    }
    created = queries.CreatedRange(**times)
    if created.since and created.until and created.since >= created.until:
        raise Refused(400, "'since' must be before 'until'.")
    return created


def _since_field() -> datetime:
    return _utc_time(request.form.get("since", "").strip(), "since")


def _utc_time(raw: str, name: str) -> datetime:
    """RFC 3339, or the browser's ``YYYY-MM-DDTHH:MM[:SS]`` read as UTC."""
    if BROWSER_TIME.fullmatch(raw):
        raw += "Z" if raw.count(":") == 2 else ":00Z"
    try:
        return _TIME.validate_python(raw)
    except ValidationError as error:
        raise Refused(400, f"'{name}' {error.errors()[0]['msg']}.") from None
