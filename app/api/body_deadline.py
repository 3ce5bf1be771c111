"""Request bodies read within ``N3HUB_BODY_TIMEOUT``: a client that sends one slowly is cut off.

No Gunicorn worker class bounds the time a request body takes to arrive: the
gevent worker waits for ever, sync and gthread until the worker itself is
killed. So the guard (:mod:`app.api.guard`) has the body of each admitted
request read here first, in full, up to one byte past ``N3HUB_MAX_BODY_BYTES``
(enough for the 413 of a chunked body), and puts it back in ``wsgi.input`` for
everything below. A socket timeout cannot bound the whole body, since a client
may trickle a byte just before each one ends: one watchdog thread per process
shuts the read side of the sockets whose deadline passed. The read then ends
short, the answer is 408, and the server closes the connection, finding nothing
more to read on it.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import logging
import os
import socket
import threading
import time
from typing import Any

from app.api.errors import APIError

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
# Where a server puts the client's socket: Gunicorn's workers, Werkzeug's development server.
SOCKET_ENVIRON_KEYS = ("gunicorn.socket", "werkzeug.socket")


class _Watch:
    """A socket to cut off at ``deadline`` unless its body is read before."""

    def __init__(self, sock: Any, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.done = False
        self.cut = False


class Watchdog:
    """One thread that shuts the read side of every socket whose body is overdue."""

    def __init__(self) -> None:
        self._wakeup = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._pid = 0

    def watch(self, sock: Any, deadline: float) -> _Watch:
        watch = _Watch(sock, deadline)
        with self._wakeup:
            if self._pid != os.getpid():  # first use in this process (a forked worker)
                self._pid = os.getpid()
                self._heap.clear()
                threading.Thread(target=self._run, name="n3hub-body-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._wakeup.notify()
        return watch

    def release(self, watch: _Watch) -> None:
        """The body was read (or the read failed): stop watching (the heap drops it later)."""
        with self._wakeup:
            watch.done = True

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(wait)
                _, _, watch = heapq.heappop(self._heap)
                if watch.done:
                    continue
                watch.cut = True
            with contextlib.suppress(OSError):  # the client went away already
                watch.sock.shutdown(socket.SHUT_RD)


_watchdog = Watchdog()


def body_timed_out(seconds: float) -> APIError:
    return APIError(
        408,
        "request_timeout",
        f"The request body did not arrive within N3HUB_BODY_TIMEOUT ({seconds:g} s).",
    )


def read_body(environ: dict[str, Any], limit: int, seconds: float) -> None:
    """Read the request's body into ``wsgi.input`` within ``seconds``; raise a 408 if it is late.

    A body whose ``Content-Length`` is over ``limit`` is left unread: the app
    refuses it with a 413 without reading it.
    """
    length = _declared_length(environ)
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if length is None and not chunked:
        return  # no body, or a Content-Length the app refuses with a 400 or 413
    wanted = limit + 1 if length is None else length
    if wanted == 0 or wanted > limit + 1:
        return
    sock = next((environ[key] for key in SOCKET_ENVIRON_KEYS if key in environ), None)
    watch = _watchdog.watch(sock, time.monotonic() + seconds) if sock is not None else None
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    got = 0
    try:
        while got < wanted:
            chunk = stream.read(min(READ_SIZE, wanted - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except Exception:
        if watch is None or not watch.cut:
            raise
    finally:
        if watch is not None:
            _watchdog.release(watch)
    if watch is not None and watch.cut and got < wanted:
        raise body_timed_out(seconds)
    environ["wsgi.input"] = io.BytesIO(b"".join(chunks))


def _declared_length(environ: dict[str, Any]) -> int | None:
    length = environ.get("CONTENT_LENGTH", "")
    if not (length.isascii() and length.isdigit() and len(length) <= 20):
        return None
    return int(length)
