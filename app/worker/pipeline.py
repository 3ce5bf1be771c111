"""The messages in flight in one worker process: slots, time limits, leases, outcomes.

Each process has ``N3HUB_PROCESS_CONCURRENCY`` slots. A drain
(:mod:`app.worker.drain`) claims messages for the free slots and starts them on
the process's runner (:mod:`app.worker.runners`); a slot is free again as soon
as its message's run ends. A writer thread writes outcomes while the others
run: the outcomes that ended since its last write share one transaction, and
after a write of several the next waits ``N3HUB_CLAIM_GATHER_SECONDS`` so that
a steady flow is written in a few large transactions. The same thread renews
the leases of the messages in flight every third of ``N3HUB_LEASE_SECONDS``,
and tells the console how many are in flight every ``activity.HEARTBEAT_SECONDS``.

A run that overruns ``N3HUB_PROCESS_TIMEOUT`` is a failed attempt (retried with
backoff) and its slot is freed at once. An async run is cancelled; a thread
cannot be, so it is abandoned: its late outcome is ignored. When more runs are
abandoned than the process has slots, the process gives its claims back and
exits, and Celery's prefork pool starts a fresh one.

Stopping (a warm shutdown) waits up to ``N3HUB_SHUTDOWN_GRACE`` seconds for the
runs in flight, writes their outcomes, and gives the claims of the rest back to
``pending``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from flask import Flask

from app import activity, lifecycle
from app.lifecycle import ClaimedMessage, Outcome
from app.metrics import (
    PROCESSING_TIMEOUTS,
    WORKER_ABANDONED_RUNS,
    WORKER_IN_FLIGHT,
    WORKER_SLOTS,
)
from app.worker.outcomes import timed_out
from app.worker.runners import Runner
from app.worker.settings import ProcessingSettings, with_database_retries

log = logging.getLogger(__name__)

# The exit status of a pool process that restarts itself to shed abandoned threads.
EXIT_TO_SHED_ABANDONED_RUNS = 75
Key = tuple[int, int]


def _key(message: ClaimedMessage) -> Key:
    return (message.id, message.attempts)


@dataclass(frozen=True)
class _Run:
    message: ClaimedMessage
    deadline: float


class Pipeline:
    """One process's messages in flight and the thread that writes their outcomes."""

    def __init__(
        self,
        app: Flask,
        settings: ProcessingSettings,
        runner: Runner,
        record: Callable[[list[Outcome]], None],
        exit_process: Callable[[], None] | None,
    ) -> None:
        self._app = app
        self._settings = settings
        self._runner = runner
        self._record = record
        self._exit_process = exit_process
        lock = threading.Lock()
        self._slot_freed = threading.Condition(lock)  # the drain waits on it for free slots
        self._writer_wanted = threading.Condition(lock)  # the writer waits on it for work
        self._slots_awaited = settings.concurrency + 1  # free slots the drain waits for
        self._running: dict[Key, _Run] = {}
        self._ended: list[Outcome] = []
        self._writing = 0  # outcomes the writer took and has not yet committed
        self._abandoned: set[Key] = set()
        self._lone: Key | None = None  # a message that runs with nothing beside it
        self._stopping = False
        self._broken = False
        self.claiming = threading.Lock()  # one drain at a time claims for these slots
        WORKER_SLOTS.inc(settings.concurrency)
        self._writer = threading.Thread(target=self._write_forever, name="n3hub-outcomes")
        self._writer.daemon = True
        self._writer.start()

    @property
    def capacity(self) -> int:
        """How many messages may be in flight at once."""
        return self._settings.concurrency

    @property
    def broken(self) -> bool:
        """Too many runs were abandoned: this process claims nothing more."""
        return self._broken

    def wait_for_free_slots(self, timeout: float, at_least: int = 1) -> int:
        """The number of free slots, once ``at_least`` are free or ``timeout`` seconds passed."""
        with self._slot_freed:
            self._slots_awaited = at_least
            self._slot_freed.wait_for(
                lambda: self._broken or self._stopping or self._free() >= at_least,
                max(timeout, 0),
            )
            self._slots_awaited = self.capacity + 1
            return 0 if self._broken or self._stopping else self._free()

    @property
    def idle(self) -> bool:
        """Nothing is in flight and every outcome is committed.

        Only then may a message that lost its worker run: if it kills the process,
        no other message's run or unwritten outcome goes down with it.
        """
        with self._slot_freed:
            return self._idle()

    def wait_until_idle(self, timeout: float) -> bool:
        """Whether the pipeline is :attr:`idle`, waiting up to ``timeout`` seconds for that."""
        with self._slot_freed:
            self._slot_freed.wait_for(
                lambda: self._broken or self._stopping or self._idle(), max(timeout, 0)
            )
            return not (self._broken or self._stopping) and self._idle()

    def _idle(self) -> bool:
        return not self._running and not self._ended and not self._writing

    def start(self, messages: list[ClaimedMessage], *, alone: bool = False) -> None:
        """Run claimed messages: each takes a slot until its run ends or overruns.

        A message started ``alone`` takes every slot while it runs.
        """
        deadline = time.monotonic() + self._settings.timeout_seconds
        with self._writer_wanted:
            if alone:
                [lone] = messages
                self._lone = _key(lone)
            if not self._running:  # else an earlier run's deadline comes first
                self._writer_wanted.notify()
            for message in messages:
                self._running[_key(message)] = _Run(message, deadline)
        WORKER_IN_FLIGHT.inc(len(messages))
        self._runner.start(messages, self._run_ended)

    def stop(self) -> None:
        """Let the runs in flight end within the shutdown grace, then give the rest back."""
        grace_seconds = self._settings.shutdown_grace_seconds
        with self._slot_freed:
            self._stopping = True
            self._slot_freed.wait_for(lambda: not self._running, grace_seconds)
            left = [run.message for run in self._running.values()]
            self._abandon(list(self._running))
            self._writer_wanted.notify()
        self._writer.join(timeout=grace_seconds + 5)
        self._give_back(left, "worker stopped during attempt")
        WORKER_SLOTS.dec(self.capacity)

    def _free(self) -> int:
        if self._lone is not None and self._lone in self._running:
            return 0
        return self.capacity - len(self._running)

    def _run_ended(self, message: ClaimedMessage, outcome: Outcome | None) -> None:
        key = _key(message)
        with self._writer_wanted:
            if key in self._abandoned:
                self._abandoned.discard(key)
                WORKER_ABANDONED_RUNS.dec()
                return
            if self._running.pop(key, None) is None or outcome is None:
                return
            self._ended.append(outcome)
            if len(self._ended) == 1:  # with more, the writer already waits to write them
                self._writer_wanted.notify()
            if self._free() >= self._slots_awaited or not self._running:
                self._slot_freed.notify_all()
        WORKER_IN_FLIGHT.dec()

    def _abandon(self, keys: list[Key]) -> None:
        """Stop waiting for these runs (the lock is held): their slots are free."""
        for key in keys:
            run = self._running.pop(key)
            self._abandoned.add(key)
            self._runner.abandon(run.message)
        self._slot_freed.notify_all()
        WORKER_IN_FLIGHT.dec(len(keys))
        WORKER_ABANDONED_RUNS.inc(len(keys))

    def _write_forever(self) -> None:
        renew_every = self._settings.lease_seconds / 3
        renew_at = time.monotonic() + renew_every
        report_at = 0.0
        next_write_at = 0.0
        while True:
            with self._writer_wanted:
                while True:
                    now = time.monotonic()
                    self._time_out_overruns(now)
                    if self._ended and now >= next_write_at:
                        break
                    if now >= min(renew_at, report_at):
                        break
                    if self._stopping and not self._running and not self._ended:
                        return
                    wake_at = min(renew_at, report_at, self._earliest_deadline())
                    if self._ended:
                        wake_at = min(wake_at, next_write_at)
                    self._writer_wanted.wait(wake_at - now)
                outcomes, self._ended = self._ended, []
                self._writing = len(outcomes)
                renewing = now >= renew_at
                held = [run.message for run in self._running.values()]
            if renewing:
                self._renew_leases(held + [outcome.message for outcome in outcomes])
                renew_at = now + renew_every
            if now >= report_at:
                self._report_in_flight(len(held))
                report_at = now + activity.HEARTBEAT_SECONDS
            if outcomes:
                self._write(outcomes)
                with self._slot_freed:
                    self._writing = 0
                    if not self._running:
                        self._slot_freed.notify_all()
                many = len(outcomes) > 1
                next_write_at = now + self._settings.gather_seconds if many else 0.0
            if self._broken and self._exit_process is not None:
                self._shed_abandoned_runs()

    def _earliest_deadline(self) -> float:
        # Runs are kept in the order they started, and all have the same time limit.
        return next(iter(self._running.values())).deadline if self._running else float("inf")

    def _time_out_overruns(self, now: float) -> None:
        """Turn runs past their deadline into failed attempts (the lock is held)."""
        if self._earliest_deadline() > now:
            return
        overdue = [key for key, run in self._running.items() if run.deadline <= now]
        timeout = self._settings.timeout_seconds
        self._ended.extend(timed_out(self._running[key].message, timeout) for key in overdue)
        self._abandon(overdue)
        PROCESSING_TIMEOUTS.inc(len(overdue))
        log.warning("%d messages overran the %gs processing timeout", len(overdue), timeout)
        if len(self._abandoned) > self.capacity and not self._broken:
            self._broken = True
            log.error(
                "%d abandoned processor runs (more than %d slots): this process claims no more%s",
                len(self._abandoned),
                self.capacity,
                " and restarts" if self._exit_process else "; restart the worker",
            )

    def _write(self, outcomes: list[Outcome]) -> None:
        try:
            with self._app.app_context():
                report = with_database_retries(
                    partial(lifecycle.finish_batch, outcomes, self._settings.policy)
                )
        except Exception:
            # The claims stay ``processing`` until their leases expire; the sweep takes them back.
            log.exception("could not write %d outcomes", len(outcomes))
            return
        if report.stale:
            log.warning("%d outcomes dropped: their claims were taken back", report.stale)
        self._record(outcomes)

    def _renew_leases(self, messages: list[ClaimedMessage]) -> None:
        if not messages:
            return
        try:
            with self._app.app_context():
                with_database_retries(
                    partial(lifecycle.extend_leases, messages, self._settings.lease_seconds)
                )
        except Exception:
            log.exception("could not renew the leases of %d messages", len(messages))

    def _report_in_flight(self, in_flight: int) -> None:
        try:
            with self._app.app_context():
                activity.report_in_flight(in_flight)
        except Exception as error:  # the console shows an older count; nothing else depends on it
            log.warning("could not report %d messages in flight: %s", in_flight, error)

    def _give_back(self, messages: list[ClaimedMessage], reason: str) -> None:
        if not messages:
            return
        try:
            with self._app.app_context():
                with_database_retries(partial(lifecycle.release_claims, messages, reason))
        except Exception:
            log.exception("could not give back %d claims (their leases will expire)", len(messages))

    def _shed_abandoned_runs(self) -> None:
        """Give back what is still running, and exit: the pool starts a fresh process."""
        assert self._exit_process is not None
        with self._writer_wanted:
            left = [run.message for run in self._running.values()]
            self._abandon(list(self._running))
            ended, self._ended = self._ended, []
        if ended:
            self._write(ended)
        self._give_back(left, "worker restarted during attempt")
        self._exit_process()


_lock = threading.Lock()
_of_this_process: dict[int, list[Pipeline]] = {}


def pipeline_for(app: Flask, build: Callable[[], Pipeline]) -> Pipeline:
    """The app's pipeline in this process, built on first use (a forked child builds its own)."""
    pid = os.getpid()
    with _lock:
        pipelines: dict[int, Pipeline] = app.extensions.setdefault("pipelines", {})
        pipeline = pipelines.get(pid)
        if pipeline is None:
            pipelines.clear()  # a parent's pipeline: its threads did not survive the fork
            pipeline = pipelines[pid] = build()
            _of_this_process.setdefault(pid, []).append(pipeline)
        return pipeline


def stop_this_process_pipelines() -> None:
    """Stop the pipelines this process started, each within its shutdown grace."""
    with _lock:
        pipelines = _of_this_process.pop(os.getpid(), [])
    for pipeline in pipelines:
        pipeline.stop()
