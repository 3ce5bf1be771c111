"""The command line of the bench: run every measurement once and print the results."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import scripts.bench
from app.config import PROJECT_ROOT
from scripts.bench import phases
from scripts.bench.console_pages import measure_console
from scripts.bench.load import ClosedLoop, find_wrk
from scripts.bench.processing_phases import measure_processing
from scripts.bench.profiling import Profiler
from scripts.bench.report import machine, table, write_json
from scripts.bench.stack import WORKER_CONCURRENCY, Stack, Web, tuning_overrides
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess

OUTPUT_DIR = PROJECT_ROOT / "var" / "bench"
PHASES = ("ingest", "drain", "latency", "processing", "reads")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=scripts.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--processing-messages",
        type=int,
        default=20_000,
        help="messages per waiting-processor and Celery baseline run",
    )
    parser.add_argument("--duration", type=float, default=5, help="seconds per throughput run")
    parser.add_argument(
        "--many-connections",
        type=int,
        default=128,
        help="connections of the second hello-world/ingest comparison (0 skips it)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="hello-world/ingest rounds")
    parser.add_argument("--paced-seconds", type=float, default=10, help="seconds per paced rate")
    parser.add_argument("--rates", default="50,500", help="paced rates in messages/s")
    parser.add_argument("--backlog", type=int, default=20_000, help="minimum backlog to drain")
    parser.add_argument("--rows", type=int, default=1_000_000, help="stored rows for the reads")
    parser.add_argument("--samples", type=int, default=200, help="requests per read endpoint")
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR / "results.json")
    parser.add_argument("--python-load", action="store_true", help="use Python, not wrk")
    parser.add_argument(
        "--profile", action="store_true", help="record py-spy profiles of ingest and drain"
    )
    args = parser.parse_args(argv)
    args.phases = set(args.phases.split(","))
    if unknown := args.phases - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


def revision() -> dict[str, Any]:
    """The commit measured, and how many files differ from it in the working tree."""

    def git(*arguments: str) -> str:
        completed = subprocess.run(
            ["git", *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        return completed.stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "changed_files": len(changed.splitlines())}


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, results: dict[str, Any], say: phases.Progress) -> None:
    """Every measurement, in order, on one stack; fills ``results`` as it goes."""
    wrk = None if args.python_load else find_wrk()
    with Stack(os.environ.get("DATABASE_URL", ""), OUTPUT_DIR / "logs") as stack:
        loop = ClosedLoop(wrk, stack.workdir, args.duration, connections=16)
        profiler = Profiler(args.profile, OUTPUT_DIR / "profiles", say)
        quiet = Profiler(False, profiler.directory, say)  # for the repeated measurements
        say(f"database: {stack.database.describe()}; load: {loop.tool}")
        app = stack.start()
        results["run"].update(
            database=stack.database.kind,
            database_url=stack.database.describe(),
            load_tool=loop.tool,
            connections=loop.connections,
            many_connections=args.many_connections or None,
            gunicorn=stack.gunicorn,
            celery_concurrency=WORKER_CONCURRENCY,
            claim_size=app.config["CLAIM_SIZE"],
            sqlite_synchronous=app.config["SQLITE_SYNCHRONOUS"],
            profiled=bool(profiler.py_spy),
        )
        web = stack.start_web("web")
        if "ingest" in args.phases:
            measure_ingests(args, results, stack, web, loop, profiler, say)
        if "drain" in args.phases:
            phases.top_up_backlog(app, args.backlog, say)
            results["drain"] = phases.measure_drain(stack, web, app, profiler, say)
        if "latency" in args.phases:
            if stack.worker is None:
                ready_worker(stack)
            results["latency"] = {}
            for rate in (float(value) for value in args.rates.split(",")):
                measured = phases.measure_latency(
                    stack, web, rate, args.paced_seconds, profiler, say
                )
                results["latency"][f"{rate:g}"] = measured
        if "ingest" in args.phases:
            # What a user running the whole stack sees: the worker shares the cores.
            worker = stack.worker or ready_worker(stack)
            results["ceiling_processing"], results["ingest_processing"] = phases.measure_ingest(
                stack, web, loop, app, args.rounds, quiet, say, worker=worker
            )
        stack.stop_worker()
        if "processing" in args.phases:
            results["processing"] = measure_processing(
                stack, web, app, args.processing_messages, OUTPUT_DIR / "logs", say
            )
        if "reads" in args.phases:
            results["reads"] = {"table": phases.fill_table(app, args.rows, say)}
            results["reads"].update(phases.measure_reads(web, args.samples, say))
            results["reads"]["console"] = measure_console(app, args.samples, say)
        results["profiles"] = profiler.summaries
        say("stopping the stack")


def ready_worker(stack: Stack) -> ManagedProcess:
    """Start the worker and wait until it takes tasks."""
    worker = stack.start_worker()
    wait_for(lambda: "ready." in worker.log_tail(40), timeout=60, what="the worker to be ready")
    return worker


def measure_ingests(
    args: argparse.Namespace,
    results: dict[str, Any],
    stack: Stack,
    web: Web,
    loop: ClosedLoop,
    profiler: Profiler,
    say: phases.Progress,
) -> None:
    """The ingest figures with no worker running: one and many connections, and batches."""
    app = stack.app
    assert app is not None
    results["ceiling"], results["ingest"] = phases.measure_ingest(
        stack, web, loop, app, args.rounds, profiler, say
    )
    if args.many_connections:
        # Group commit shares a transaction among the requests of a process that
        # arrive together: more connections, larger groups. Measured on both sides.
        many = ClosedLoop(loop.wrk, stack.workdir, args.duration, args.many_connections)
        quiet = Profiler(False, profiler.directory, say)
        results["ceiling_many"], results["ingest_many"] = phases.measure_ingest(
            stack, web, many, app, args.rounds, quiet, say
        )
    results["batch_ingest"] = phases.measure_batch_ingest(web, loop, app, say)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when it ran, whatever the figures say."""
    args = parse_args(argv)
    say = phases.Progress()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Even where the caller's shell ignores Ctrl-C for background jobs: it must stop the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results: dict[str, Any] = {
        "run": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, "-m", "scripts.bench", *sys.argv[1:]]),
            "settings": tuning_overrides(dict(os.environ)),
            "revision": revision(),
            "machine": machine(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    busy = os.getloadavg()[0]
    if busy > 0.5:
        say(f"note: load average {busy:.2f} before the start; other work skews the figures")
    try:
        run(args, results, say)
    except KeyboardInterrupt:
        say("interrupted: every process started has been stopped")
        return 130
    except Exception:
        traceback.print_exc()
        print("\nThe bench crashed; figures measured before that:\n" + table(results))
        return 1
    results["run"]["seconds"] = round(say.elapsed(), 1)
    results["run"]["load_average_at_end"] = os.getloadavg()
    write_json(results, args.output)
    print()
    print(table(results))
    settings = results["run"]["settings"]
    print(f"\nsettings: {settings or 'defaults'}; took {results['run']['seconds']:.0f} s")
    print(f"results: {args.output}")
    return 0
