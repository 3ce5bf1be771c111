"""The guard in front of every route: no request reaches a view or the fast path unchecked.

A WSGI middleware, outermost, so nothing below it (the fast path of
``POST /messages`` or any Flask view) can be reached around it. For each request
it finds the route's declared requirement (:mod:`app.auth.access`), reads the
``Authorization: Bearer`` key, checks its scope and charges it against the rate
limits (:mod:`app.auth.quotas`); then it has the body read within
``N3HUB_BODY_TIMEOUT`` (:mod:`app.api.body_deadline`). An accepted request carries
its :class:`~app.auth.principals.Principal` in the WSGI environ; a refused one
carries the refusal and goes to Flask, whose first hook raises it, so it is
answered by the app's error handlers (JSON envelope, request id, metrics).

Console pages pass: they demand their own login session (:mod:`app.console`).
Routes that match nothing still need a valid key: an anonymous caller learns
nothing, not even which paths exist. ``/metrics`` takes ``N3HUB_METRICS_TOKEN``
when one is set; without one it is open in development and needs an ``admin``
key in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from app.api.body_deadline import read_body
from app.api.errors import APIError
from app.auth.access import Access, Requirement, requirement_of
from app.auth.keys import Scope
from app.auth.principals import Principal, PrincipalCache, bearer_token, challenge, presents_token
from app.auth.quotas import OverLimit, Quotas

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PRINCIPAL_ENVIRON = "n3hub.principal"
REFUSAL_ENVIRON = "n3hub.refusal"
_UNMATCHED = "unmatched"
MAX_FIXED_ROUTES = 256  # only routes without variables are kept, and those are few


def unauthorized(message: str, invalid: bool) -> APIError:
    """A 401 that tells the client to send a bearer key."""
    return APIError(401, "unauthorized", message, headers=challenge(invalid))


def too_many(over: OverLimit) -> APIError:
    """A 429 for a key over one of its rate limits."""
    return APIError(
        429,
        "rate_limited",
        f"This API key went over its rate limit of {over.describe()}; retry later.",
        {"limit": over.describe()},
        headers=over.headers(),
    )


def forbidden(requirement: Requirement) -> APIError:
    """A 403 for a valid key that lacks what the route demands."""
    return APIError(
        403,
        "forbidden",
        f"This API key lacks the {requirement!s} scope this request needs.",
        {"required_scope": str(requirement)},
    )


class Guard:
    """Authenticates every request and checks the route's scope before passing it on."""

    def __init__(self, app: Flask, inner: WSGIApp) -> None:
        self._inner = inner
        self._url_map = app.url_map
        self._requirements = {
            endpoint: requirement_of(view) for endpoint, view in app.view_functions.items()
        }
        self._principals: PrincipalCache = app.extensions["principals"]
        self._quotas: Quotas = app.extensions["quotas"]
        self._metrics_token: str = app.config["METRICS_TOKEN"]
        self._production = app.config["ENV_NAME"] == "production"
        self._fixed_routes: dict[tuple[str, str | None], Requirement | None] = {}
        self._max_body: int = app.config["MAX_CONTENT_LENGTH"]
        self._body_timeout: float = app.config["BODY_TIMEOUT"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        refusal: Exception | None = None
        try:
            principal = self._admit(environ)
        except Exception as error:  # a database that fails the key lookup too
            refusal = error
        else:
            if principal is not None:
                environ[PRINCIPAL_ENVIRON] = principal
        # A refused request's body is read too: a slow one must not hold the connection.
        try:
            read_body(environ, self._max_body, self._body_timeout)
        except APIError as late:
            refusal = refusal or late
            environ.pop(PRINCIPAL_ENVIRON, None)
        if refusal is not None:
            environ[REFUSAL_ENVIRON] = refusal
        return self._inner(environ, start_response)

    def _admit(self, environ: dict[str, Any]) -> Principal | None:
        """The caller, None for an open route; raises the refusal."""
        requirement = self._requirement(environ)
        if requirement in (Access.PUBLIC, Access.CONSOLE):
            return None  # the console checks its own session cookie
        if requirement == Access.METRICS:
            return self._admit_scraper(environ)
        principal = self._authenticate(environ)
        if requirement != _UNMATCHED:  # else Flask answers the 404 or 405
            if not isinstance(requirement, Scope):
                raise APIError(403, "forbidden", "This route is not open to API keys.")
            if not principal.may(requirement):
                raise forbidden(requirement)
        over = self._quotas.charge(principal.key_hash)
        if over is not None:
            raise too_many(over)
        return principal

    def _requirement(self, environ: dict[str, Any]) -> Requirement | str | None:
        route = (environ["REQUEST_METHOD"], environ.get("PATH_INFO"))
        if route in self._fixed_routes:
            return self._fixed_routes[route]
        adapter = self._url_map.bind_to_environ(environ)
        try:
            endpoint, arguments = adapter.match()
        except RequestRedirect as redirect:
            # /docs -> /docs/: the redirect is answered as its target is (open, or not).
            try:
                endpoint, arguments = adapter.match(urlsplit(redirect.new_url).path)
            except HTTPException:
                return _UNMATCHED
        except HTTPException:
            return _UNMATCHED
        requirement = self._requirements.get(endpoint)
        if not arguments and len(self._fixed_routes) < MAX_FIXED_ROUTES:
            # Routing costs more than the rest of the guard; routes without variables repeat.
            self._fixed_routes[route] = requirement
        return requirement

    def _authenticate(self, environ: dict[str, Any]) -> Principal:
        header = environ.get("HTTP_AUTHORIZATION")
        token = bearer_token(header)
        if token is None:
            if header:
                raise unauthorized("The Authorization header is not 'Bearer <key>'.", True)
            raise unauthorized("Send an API key: 'Authorization: Bearer <key>'.", False)
        principal = self._principals.principal(token)
        if principal is None:
            raise unauthorized("The API key is unknown or revoked.", True)
        return principal

    def _admit_scraper(self, environ: dict[str, Any]) -> Principal | None:
        if self._metrics_token:
            if not presents_token(environ.get("HTTP_AUTHORIZATION"), self._metrics_token):
                raise unauthorized("/metrics needs 'Authorization: Bearer <metrics token>'.", True)
            return None
        if not self._production:
            return None
        principal = self._authenticate(environ)
        if not principal.may(Scope.ADMIN):
            raise forbidden(Scope.ADMIN)
        return principal


def principal() -> Principal:
    """The caller of the current Flask request; a 401 if no guard admitted it."""
    admitted = request.environ.get(PRINCIPAL_ENVIRON)
    if admitted is None:
        raise unauthorized("Send an API key: 'Authorization: Bearer <key>'.", False)
    return admitted


def charge_more(cost: int) -> None:
    """Charge the current caller for ``cost`` more requests (a batch's messages); 429 if over."""
    if cost > 0:
        over = current_app.extensions["quotas"].charge(principal().key_hash, cost)
        if over is not None:
            raise too_many(over)


def _raise_refusal() -> None:
    refusal = request.environ.get(REFUSAL_ENVIRON)
    if refusal is not None:
        raise refusal


def init_app(app: Flask) -> None:
    """Put the guard outermost, after every route and the fast path are in place."""
    app.before_request(_raise_refusal)
    app.wsgi_app = Guard(app, app.wsgi_app)  # type: ignore[method-assign]
