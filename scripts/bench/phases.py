"""The measurements of one run, each returning its figures for the results.

They run in this order, on one stack: the hello-world ceiling; ``POST
/messages`` with no worker running (its messages become the backlog, topped up
to the minimum with a bulk insert); the drain of that backlog by a freshly
started worker; created -> completed latency at paced rates; the ceiling and
``POST /messages`` again, now with the worker processing the messages as they
arrive; then, with the worker stopped so nothing changes under the reads, the
table is filled to a million rows and the read endpoints are timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from app.database import read_connection, write_transaction
from app.models import Message, MessageStatus
from scripts.bench.client import Client
from scripts.bench.hello import GREETING
from scripts.bench.load import ClosedLoop, Throughput, batch_payload, paced_posts
from scripts.bench.profiling import Profiler
from scripts.bench.report import READ_ENDPOINTS, distribution_ms
from scripts.bench.seed import StatusMix, delete_messages_after, insert_messages
from scripts.bench.stack import Stack, Web, group_cpu_seconds
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess

Say = Callable[[str], None]
HELLO_APP = "scripts.bench.hello:app"
DRAIN_TIMEOUT_SECONDS = 300
SETTLE_TIMEOUT_SECONDS = 120
# The frames that hold one request's and one drain task's wall-clock time in a profile.
WEB_REQUEST = "Flask.wsgi_app"
DRAIN_TASK = "drain_messages"
# Messages per POST /messages/batch request.
BATCH_SIZE = 100
# The status mix of the million stored messages.
STORED_MIX = StatusMix(completed=97, failed=2)


class Progress:
    """Prints a line per step with the time since the run started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)


def _throughput(result: Throughput) -> dict[str, Any]:
    return {**asdict(result), "per_second": result.per_second}


def _loaded(run: Callable[[], Throughput], processes: dict[str, ManagedProcess]) -> dict[str, Any]:
    """Run a load and note the CPU each process tree used per request it served."""
    before = {name: group_cpu_seconds(process.pid) for name, process in processes.items()}
    result = _throughput(run())
    served = max(result["requests"], 1)
    result["cpu_ms_per_request"] = {
        name: (group_cpu_seconds(process.pid) - before[name]) * 1000 / served
        for name, process in processes.items()
    }
    return result


def _scalar(app: Flask, query: Any) -> Any:
    with app.app_context(), read_connection() as connection:
        return connection.execute(query).scalar()


def count_messages(app: Flask, *conditions: Any) -> int:
    """How many messages match ``conditions``."""
    return int(_scalar(app, select(func.count()).select_from(Message).where(*conditions)))


def settled_count(app: Flask, *conditions: Any, quiet: float = 0.5) -> int:
    """The count of matching messages once it has stopped changing for ``quiet`` seconds.

    A load generator that stops leaves requests in flight; they still commit.
    """
    count = count_messages(app, *conditions)
    for _ in range(40):
        time.sleep(quiet)
        latest = count_messages(app, *conditions)
        if latest == count:
            break
        count = latest
    return count


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median requests/s of several runs, with every run kept."""
    median = {
        "per_second": statistics.median(run["per_second"] for run in runs),
        "web_cpu_ms_per_request": statistics.median(
            run["cpu_ms_per_request"]["gunicorn"] for run in runs
        ),
        "errors": sum(run["errors"] for run in runs),
        "rounds": runs,
    }
    if "worker" in runs[0]["cpu_ms_per_request"]:
        median["worker_cpu_ms_per_request"] = statistics.median(
            run["cpu_ms_per_request"]["worker"] for run in runs
        )
    return median


def _cpu_text(run: dict[str, Any]) -> str:
    used = run["cpu_ms_per_request"]
    return " + ".join(f"{name} {ms:.2f}" for name, ms in used.items()) + " CPU ms/request"


def measure_ingest(
    stack: Stack,
    web: Web,
    loop: ClosedLoop,
    app: Flask,
    rounds: int,
    profiler: Profiler,
    say: Say,
    worker: ManagedProcess | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Requests/s of a hello-world app (the ceiling) and of durable ``POST /messages``.

    Both servers run under the project's Gunicorn settings and take turns, round
    after round, so that a slow spell of the machine hits both; the ratio is the
    median of the rounds' ratios. Without ``worker`` the messages wait as the
    backlog; with it, each POST round starts with nothing pending and the worker
    processes the messages as they come, on the same two cores.
    """
    hello = stack.start_web("hello", HELLO_APP, probe="/")
    assert stack.redis is not None
    redis = stack.redis
    loaded = {"gunicorn": web.process, "redis": redis}
    if worker is not None:
        loaded["worker"] = worker
    while_processing = " while the worker processes" if worker is not None else ""
    ceilings: list[dict[str, Any]] = []
    ingests: list[dict[str, Any]] = []
    try:
        reply = Client(hello.port).get("/")
        if reply.status != 200 or reply.raw.decode() != GREETING:
            raise RuntimeError("the hello-world server did not answer with its greeting")
        say(
            f"ingest: {rounds} rounds of GET / on the hello-world app, then POST /messages"
            f"{while_processing}, {loop.duration:g} s each, {loop.connections} connections"
        )
        for number in range(1, rounds + 1):
            ceilings.append(_loaded(lambda: loop.get_root(hello.port), {"gunicorn": hello.process}))
            if worker is not None:
                _wait_processed(app)
            before = count_messages(app)
            # Profiles, when asked for: where the CPU goes in the second-to-last round,
            # where a request's time goes in the last.
            with (
                profiler.recording("ingest-web-cpu", web.process.pid, active=number == rounds - 1),
                profiler.recording(
                    "ingest-web-requests", web.process.pid, number == rounds, WEB_REQUEST
                ),
            ):
                ingest = _loaded(lambda: loop.post_messages(web.port), loaded)
            ingest["stored"] = settled_count(app) - before
            ingest["ratio_to_ceiling"] = ingest["per_second"] / ceilings[-1]["per_second"]
            ingests.append(ingest)
            say(
                f"ingest: round {number}: hello {ceilings[-1]['per_second']:,.0f} req/s"
                f" ({_cpu_text(ceilings[-1])}), POST /messages {ingest['per_second']:,.0f} req/s"
                f" ({_cpu_text(ingest)}): ratio {ingest['ratio_to_ceiling']:.2f}"
            )
    finally:
        hello.stop()
    ceiling = _median_run(ceilings)
    result = _median_run(ingests)
    result["ratio_to_ceiling"] = statistics.median(run["ratio_to_ceiling"] for run in ingests)
    result["stored"] = sum(run["stored"] for run in ingests)
    say(
        f"ingest: median {result['per_second']:,.0f} req/s against a ceiling of"
        f" {ceiling['per_second']:,.0f} req/s: ratio {result['ratio_to_ceiling']:.2f}"
    )
    return ceiling, result


def _wait_processed(app: Flask) -> None:
    unfinished = Message.status.in_([MessageStatus.PENDING, MessageStatus.PROCESSING])
    wait_for(
        lambda: count_messages(app, unfinished) == 0,
        timeout=SETTLE_TIMEOUT_SECONDS,
        interval=0.2,
        what="the worker to process every message",
    )


def measure_batch_ingest(web: Web, loop: ClosedLoop, app: Flask, say: Say) -> dict[str, Any] | None:
    """Messages/s through ``POST /messages/batch``, if the service has it; None otherwise.

    The messages it stores are deleted afterwards, so that the backlog to drain
    is the same whether or not the endpoint exists.
    """
    last_kept = int(_scalar(app, select(func.coalesce(func.max(Message.id), 0))))
    probe = Client(web.port).post("/messages/batch", batch_payload("batch probe", 0, 1))
    if probe.status in (404, 405):
        say("batch ingest: n/a (no POST /messages/batch)")
        return None
    if probe.status != 201:
        raise RuntimeError(f"POST /messages/batch answered {probe.status}: {probe.raw[:300]!r}")
    say(f"batch ingest: POST /messages/batch of {BATCH_SIZE} for {loop.duration:g} s")
    result = _throughput(loop.post_batches(web.port, BATCH_SIZE))
    stored = settled_count(app, Message.id > last_kept)
    accepted = (result["requests"] - result["errors"]) * BATCH_SIZE
    result.update(
        batch_size=BATCH_SIZE, stored=stored, messages_per_second=accepted / result["seconds"]
    )
    say(
        f"batch ingest: {result['messages_per_second']:,.0f} messages/s"
        f" ({result['per_second']:,.0f} req/s); removing its {stored:,} messages"
    )
    delete_messages_after(app, last_kept)
    return result


def top_up_backlog(app: Flask, minimum: int, say: Say) -> None:
    """Bulk-insert pending messages until at least ``minimum`` wait."""
    pending = count_messages(app, Message.status == MessageStatus.PENDING)
    if pending < minimum:
        say(f"backlog: {pending:,} pending from ingest, inserting {minimum - pending:,} more")
        insert_messages(app, minimum - pending, StatusMix(), spacing_seconds=0.001)


def _completion_window(app: Flask, first_id: int, last_id: int) -> tuple[Any, Any, int]:
    """First and last ``completed_at`` of the range, and how many completed after the first."""
    in_range = (Message.id.between(first_id, last_id), Message.status == MessageStatus.COMPLETED)
    with app.app_context(), read_connection() as connection:
        first, last = connection.execute(
            select(func.min(Message.completed_at), func.max(Message.completed_at)).where(*in_range)
        ).one()
        after_first = connection.execute(
            select(func.count()).select_from(Message).where(*in_range, Message.completed_at > first)
        ).scalar()
    return first, last, int(after_first or 0)


def measure_drain(
    stack: Stack, web: Web, app: Flask, profiler: Profiler, say: Say
) -> dict[str, Any]:
    """Messages/s completed from the backlog by a worker with two pool processes."""
    pending = Message.status == MessageStatus.PENDING
    backlog = count_messages(app, pending)
    first_id = _scalar(app, select(func.min(Message.id)).where(pending))
    last_id = _scalar(app, select(func.max(Message.id)).where(pending))
    client = Client(web.port)
    completed_before = client.get("/messages/stats").body["completed"]
    say(f"drain: starting a worker (concurrency 2) on {backlog:,} pending messages")
    started = time.monotonic()
    worker = stack.start_worker()
    ready = None
    # CPU used and messages done when the worker reported ready, to leave its start-up out.
    cpu_at_ready, done_at_ready = 0.0, 0
    shown = started
    timed_out = False
    with profiler.recording("drain-worker", worker.pid):
        while True:
            stats = client.get("/messages/stats").body
            now = time.monotonic()
            if ready is None and "ready." in worker.log_tail(40):
                ready = now
                cpu_at_ready = group_cpu_seconds(worker.pid)
                done_at_ready = stats["completed"] - completed_before
            if stats["pending"] + stats["processing"] == 0:
                break
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            if now - started > DRAIN_TIMEOUT_SECONDS:
                timed_out = True
                break
            if now - shown >= 2:
                say(f"drain: {stats['completed']:,} completed, {stats['pending']:,} pending")
                shown = now
            time.sleep(0.05)
    wall = time.monotonic() - started
    cpu_after_ready = group_cpu_seconds(worker.pid) - cpu_at_ready
    first, last, after_first = _completion_window(app, first_id, last_id)
    window = (last - first).total_seconds() if first and last else 0.0
    result = {
        "messages": backlog,
        "timed_out": timed_out,
        "wall_seconds": wall,
        "wall_rate": backlog / wall,
        "worker_ready_seconds": (ready - started) if ready else None,
        "first_to_last_seconds": window,
        "first_to_last_rate": after_first / window if window else None,
        "worker_cpu_ms_per_message": cpu_after_ready * 1000 / max(backlog - done_at_ready, 1),
    }
    say(
        f"drain: {backlog:,} in {wall:.1f} s from worker start ({result['wall_rate']:,.0f}/s);"
        f" first->last completion {window:.2f} s ({result['first_to_last_rate'] or 0:,.0f}/s)"
    )
    return result


def _all_finished(app: Flask, first_id: int, last_id: int, expected: int) -> bool:
    finished = Message.status.in_([MessageStatus.COMPLETED, MessageStatus.FAILED])
    return count_messages(app, Message.id.between(first_id, last_id), finished) >= expected


def measure_latency(
    stack: Stack, web: Web, rate: float, duration: float, profiler: Profiler, say: Say
) -> dict[str, Any]:
    """Created -> completed latency of messages posted at a steady ``rate`` per second."""
    app = stack.app
    assert app is not None and stack.worker is not None
    say(f"latency: posting {rate:g} messages/s for {duration:g} s")
    with (
        profiler.recording(f"latency-{rate:g}-web", web.process.pid, within=WEB_REQUEST),
        profiler.recording(f"latency-{rate:g}-worker", stack.worker.pid, within=DRAIN_TASK),
    ):
        run = paced_posts(web.port, rate, duration)
    if not run.ids:
        raise RuntimeError(f"no message was accepted at {rate:g}/s")
    first_id, last_id = min(run.ids), max(run.ids)
    wait_for(
        lambda: _all_finished(app, first_id, last_id, len(run.ids)),
        timeout=SETTLE_TIMEOUT_SECONDS,
        interval=0.2,
        what=f"the messages posted at {rate:g}/s to be processed",
    )
    with app.app_context(), read_connection() as connection:
        rows = connection.execute(
            select(Message.created_at, Message.started_at, Message.completed_at).where(
                Message.id.in_(run.ids), Message.status == MessageStatus.COMPLETED
            )
        ).all()

    def spans_ms(start: int, end: int) -> list[float]:
        return [(row[end] - row[start]).total_seconds() * 1000 for row in rows]

    result = {
        "target_rate": rate,
        "achieved_rate": run.achieved_rate,
        # The service could not keep up: requests went out later than due.
        "saturated": run.achieved_rate < 0.95 * rate,
        "errors": run.errors,
        "sender_max_lateness_ms": run.max_lateness_ms,
        **distribution_ms(spans_ms(0, 2)),
        # The two parts: waiting to be claimed, then claimed until the outcome is written.
        "created_to_claimed": distribution_ms(spans_ms(0, 1)),
        "claimed_to_completed": distribution_ms(spans_ms(1, 2)),
        "post": distribution_ms(run.response_ms),
    }
    say(
        f"latency @ {rate:g}/s: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
        f" (to claim p50 {result['created_to_claimed']['p50_ms']:.1f} ms;"
        f" POST p50 {result['post']['p50_ms']:.1f} ms; sent {run.achieved_rate:.0f}/s"
        + (", saturated)" if result["saturated"] else ")")
    )
    return result


def fill_table(app: Flask, rows: int, say: Say) -> dict[str, Any]:
    """Bulk-insert messages until ``rows`` are stored, in the usual status mix."""
    missing = max(rows - count_messages(app), 0)
    started = time.monotonic()
    say(f"reads: inserting {missing:,} messages to reach {rows:,}")

    def show(done: int) -> None:
        say(f"reads: {done:,} / {missing:,} inserted")

    # Two seconds apart: a million messages span the last three weeks.
    insert_messages(app, missing, STORED_MIX, spacing_seconds=2.0, progress=show)
    with app.app_context(), write_transaction() as connection:
        if connection.dialect.name == "postgresql":
            # Autovacuum would do this soon after a bulk load; do it now for stable plans.
            connection.exec_driver_sql("ANALYZE messages")
    return {"rows": count_messages(app), "inserted": missing, "seconds": time.monotonic() - started}


def measure_reads(web: Web, samples: int, say: Say, warmup: int = 10) -> dict[str, Any]:
    """Median and p99 of sequential requests to each read endpoint."""
    client = Client(web.port)
    results: dict[str, Any] = {}
    for endpoint in READ_ENDPOINTS:
        path = endpoint.split(" ", 1)[1]
        for _ in range(warmup):
            client.get(path)
        replies = [client.get(path) for _ in range(samples)]
        timings = [reply.seconds * 1000 for reply in replies]
        errors = sum(reply.status != 200 for reply in replies)
        results[endpoint] = {**distribution_ms(timings), "errors": errors}
        say(
            f"reads: {endpoint}: p50 {results[endpoint]['p50_ms']:.2f} ms,"
            f" p99 {results[endpoint]['p99_ms']:.2f} ms ({errors} errors)"
        )
    return results
