"""Optional sampling profiles of the processes under load, taken with py-spy.

``py-spy record --subprocesses`` follows a Gunicorn master's workers or a Celery
worker's pool processes, sampling threads that are running (not those asleep on
I/O, a lock or the GIL). The raw output holds one collapsed stack per line with
its sample count; :func:`summarize` tells which layer of the stack the samples
fall in and which functions were most often on top.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]+?)(?::\d+)?\)$")
# Where a sample's time goes, by the file of the innermost frame that names one of
# these (first match wins): C calls show up as the Python frame that made them.
LAYERS = (
    ("database (SQLAlchemy, sqlite3, psycopg)", ("sqlalchemy/", "sqlite3/", "psycopg")),
    ("broker (celery, kombu, redis, billiard)", ("celery/", "kombu/", "redis/", "billiard/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging", ("logging/", "pythonjsonlogger/")),
    ("json", ("json/",)),
    ("HTTP framework (flask, werkzeug)", ("flask/", "werkzeug/", "click/")),
    ("HTTP server (gunicorn)", ("gunicorn/", "selectors.py", "socket.py")),
    ("n3hub (app/)", ("app/",)),
)
OTHER = "other (stdlib, threads, start-up)"


def _frame_file(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return match["file"] if match else ""


def _frame_name(frame: str) -> str:
    """``function (package/module.py)``: the frame without its line number."""
    match = _FRAME.match(frame.strip())
    return f"{match['function']} ({match['file']})" if match else frame.strip()


def layer_of(files: list[str]) -> str:
    """The layer of a stack, given its frames' files from outermost to innermost."""
    for path in reversed(files):
        for layer, markers in LAYERS:
            if any(marker in path for marker in markers):
                return layer
    return OTHER


def summarize(
    collapsed: str, top: int = 12, within: str | None = None
) -> dict[str, list[tuple[str, float]]]:
    """Shares of the samples: by layer, by function on top of the stack, by n3hub function.

    ``app`` counts each function of ``app/`` once per stack that passes through
    it (inclusive time). With ``within``, only the stacks containing that text count.
    """
    counters: dict[str, Counter[str]] = {"layers": Counter(), "self": Counter(), "app": Counter()}
    total = 0
    for line in collapsed.splitlines():
        if within is not None and within not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        files = [_frame_file(frame) for frame in frames]
        counters["layers"][layer_of(files)] += count
        counters["self"][_frame_name(frames[-1])] += count
        pairs = zip(frames, files, strict=True)
        for name in {_frame_name(frame) for frame, path in pairs if path.startswith("app/")}:
            counters["app"][name] += count
    return {
        kind: [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]
        for kind, counter in counters.items()
    }


class Profiler:
    """Records py-spy profiles into ``directory`` when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool, directory: Path, say: Callable[[str], None]) -> None:
        beside_python = Path(sys.executable).parent / "py-spy"
        found = shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)
        self.py_spy = found if enabled else None
        self.directory = directory
        self.say = say
        if enabled and self.py_spy is None:
            say("py-spy not found (pip install py-spy): running without profiles")
        self.summaries: dict[str, dict[str, list[tuple[str, float]]]] = {}

    @contextmanager
    def recording(
        self, name: str, pid: int, active: bool = True, within: str | None = None
    ) -> Iterator[None]:
        """Sample process ``pid`` and its children while the block runs (if ``active``).

        Without ``within`` only running threads are sampled: where the CPU goes.
        With it, waiting threads too, counting only the stacks inside ``within``
        (a function name): where the wall-clock time of that function goes.
        """
        if self.py_spy is None or not active:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        output = self.directory / f"{name}.txt"
        argv = [self.py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
        argv += ["--rate", "250", "--format", "raw", "--output", str(output)]
        if within is not None:
            argv.append("--idle")
        recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            yield
        finally:
            recorder.send_signal(signal.SIGINT)
            _, errors = recorder.communicate(timeout=60)
        if not output.exists():
            self.say(f"py-spy wrote no profile for {name}: {errors.decode(errors='replace')}")
            return
        summary = summarize(output.read_text(), within=within)
        self.summaries[name] = summary
        samples = f"samples inside {within}" if within else "on-CPU samples"
        self.say(f"profile {name} ({output}), share of {samples} by layer:")
        for layer, share in summary["layers"]:
            self.say(f"  {share:5.1f}%  {layer}")
        for kind, title in (("self", "most often on top of the stack"), ("app", "in n3hub")):
            self.say(f"profile {name}, functions {title}:")
            for function, share in summary[kind][:10]:
                self.say(f"  {share:5.1f}%  {function}")
