"""Where processors run: plain ones on threads, ``async def`` ones on an event loop.

A runner starts messages and reports each one's end through a callback, from
the thread that ran it: ``ended(message, outcome)``, where the outcome is None
for a run that was abandoned and cancelled. Neither kind of runner limits how
many messages it runs at once; the pipeline (:mod:`app.worker.pipeline`) does.

Threads are started as they are needed and kept: a process never has more than
it once had messages in flight, plus the ones abandoned to a processor that
never returned (a thread cannot be stopped, so the pipeline counts them). An
``async def`` processor runs on one event loop per process; a run that overruns
its time is cancelled there.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from app.lifecycle import ClaimedMessage, Outcome
from app.worker.outcomes import run_async_processor, run_processor
from app.worker.processors import Processor

Ended = Callable[[ClaimedMessage, Outcome | None], None]


class Runner(Protocol):
    """Runs processors on messages and reports when each one ends."""

    def start(self, messages: list[ClaimedMessage], ended: Ended) -> None: ...

    def abandon(self, message: ClaimedMessage) -> None: ...


class ThreadRunner:
    """Runs a plain processor, each message on a thread of its own while it runs."""

    def __init__(self, processor: Processor, max_result_bytes: int) -> None:
        self._processor = processor
        self._max_result_bytes = max_result_bytes
        self._work: queue.SimpleQueue[tuple[ClaimedMessage, Ended]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def start(self, messages: list[ClaimedMessage], ended: Ended) -> None:
        """Hand the messages to idle threads, starting new ones for the rest."""
        with self._lock:
            reused = min(self._idle, len(messages))
            self._idle -= reused
        for message in messages:
            self._work.put((message, ended))
        for _ in range(len(messages) - reused):
            threading.Thread(target=self._serve, name="n3hub-processor", daemon=True).start()

    def abandon(self, message: ClaimedMessage) -> None:
        """Nothing can stop a thread: its run goes on, and its outcome is ignored."""

    def _serve(self) -> None:
        while True:
            message, ended = self._work.get()
            ended(message, run_processor(self._processor, message, self._max_result_bytes))
            with self._lock:
                self._idle += 1


class AsyncRunner:
    """Runs an ``async def`` processor on this process's event loop, all messages at once."""

    def __init__(self, processor: Processor, max_result_bytes: int) -> None:
        self._processor = processor
        self._max_result_bytes = max_result_bytes
        self._loop = asyncio.new_event_loop()
        self._tasks: dict[tuple[int, int], asyncio.Task[None]] = {}  # touched on the loop only
        threading.Thread(
            target=self._loop.run_forever, name="n3hub-event-loop", daemon=True
        ).start()

    def start(self, messages: list[ClaimedMessage], ended: Ended) -> None:
        """Start one task per message on the event loop."""
        self._loop.call_soon_threadsafe(self._start_all, messages, ended)

    def abandon(self, message: ClaimedMessage) -> None:
        """Cancel the message's run."""
        self._loop.call_soon_threadsafe(self._cancel, (message.id, message.attempts))

    def _start_all(self, messages: list[ClaimedMessage], ended: Ended) -> None:
        for message in messages:
            key = (message.id, message.attempts)
            self._tasks[key] = self._loop.create_task(self._run(message, ended))

    async def _run(self, message: ClaimedMessage, ended: Ended) -> None:
        outcome: Outcome | None = None
        try:
            outcome = await run_async_processor(self._processor, message, self._max_result_bytes)
        except asyncio.CancelledError:
            pass  # abandoned: the pipeline already wrote this attempt off
        finally:
            self._tasks.pop((message.id, message.attempts), None)
            ended(message, outcome)

    def _cancel(self, key: tuple[int, int]) -> None:
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()


def runner_for(processor: Processor, max_result_bytes: int) -> Runner:
    """The runner that suits the processor: an event loop for ``async def``, else threads.

    A result larger than ``max_result_bytes`` of JSON fails its message.
    """
    call = getattr(processor, "__call__", None)  # noqa: B004 - an object with async __call__
    if inspect.iscoroutinefunction(processor) or inspect.iscoroutinefunction(call):
        return AsyncRunner(processor, max_result_bytes)
    return ThreadRunner(processor, max_result_bytes)
