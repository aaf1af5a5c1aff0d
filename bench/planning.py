"""Where planning a day's outbox spends its time, stage by stage.

    python -m bench.planning [--subscribers N] [--database sqlite|postgresql|both]
                             [--history-days D] [--repeat R]

Creates the throughput bench's data set (bench.throughput.populate), then plans the day R
times (the day's outbox forgotten in between) with the production Planner, timing each call
it makes to the outbox: reading the candidates, the already-sent lookup, writing the outbox
rows with their sent log; "select" is the rest (matching, ranking, Message-IDs). Figures
are medians of the R runs. Nothing is sent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.throughput import DAY, PG_DEFAULT, PgDatabase, populate, reset_day, settings_for

STAGES = ("candidates", "already_sent", "add_deliveries", "select")


def timed(stages: dict[str, float], name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            stages[name] += time.perf_counter() - started

    return wrapper


def timed_batches(
    stages: dict[str, float], call: Callable[..., Iterator[Any]]
) -> Callable[..., Iterator[Any]]:
    """The candidates generator, timing only the time spent inside it."""

    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        batches = call(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                stages["candidates"] += time.perf_counter() - started
                return
            stages["candidates"] += time.perf_counter() - started
            yield batch

    return wrapper


def plan_once(url: str) -> dict[str, float]:
    from newsletter.root import Newsletter

    app = Newsletter(settings_for(url, 25, "pipelined", 1))
    stages: dict[str, float] = defaultdict(float)
    outbox = app.store.outbox
    outbox.plan_candidates = timed_batches(stages, outbox.plan_candidates)  # type: ignore[method-assign]
    outbox.already_sent = timed(stages, "already_sent", outbox.already_sent)  # type: ignore[method-assign]
    outbox.add_deliveries = timed(stages, "add_deliveries", outbox.add_deliveries)  # type: ignore[method-assign]
    started = time.perf_counter()
    report = app.plan(DAY, immediately=True)
    total = time.perf_counter() - started
    app.close()
    stages["select"] = total - sum(stages[s] for s in STAGES if s != "select")
    stages["total"] = total
    stages["queued"] = report.queued
    return stages


def run(database: str, n: int, history_days: int, repeat: int, pg_base: str) -> None:
    pg = PgDatabase(pg_base) if database == "postgresql" else None
    folder = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    url = pg.url if pg else f"sqlite:///{folder / 'bench.db'}"
    try:
        loaded = populate(url, n, history_days)
        samples = []
        for attempt in range(repeat):
            if attempt:
                reset_day(url)
            samples.append(plan_once(url))
    finally:
        if pg:
            pg.drop()
        shutil.rmtree(folder, ignore_errors=True)
    m = {k: statistics.median(s[k] for s in samples) for k in (*STAGES, "total")}
    each = ", ".join(f"{s['total']:.2f}" for s in samples)
    print(
        f"{database:<10} N={n:<7} hist={history_days}d ({loaded['history_rows']} rows) "
        f"queued {int(samples[-1]['queued'])}: plan {m['total']:.2f}s (runs: {each})\n"
        + "    "
        + "  ".join(f"{stage} {m[stage]:.2f}s" for stage in STAGES),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.planning", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--history-days", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("NEWSLETTER_BENCH_POSTGRES_URL", PG_DEFAULT)
    )
    args = parser.parse_args(argv)
    for database in ("sqlite", "postgresql"):
        if args.database in (database, "both"):
            run(database, args.subscribers, args.history_days, args.repeat, args.postgres_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
