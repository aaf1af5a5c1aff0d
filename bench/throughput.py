"""Throughput of the real send path into Postfix's smtp-sink, against smtp-source's ceiling.

    python -m bench.throughput [--subscribers N] [--database sqlite|postgresql|both]
                               [--history-days D] [--workers K]

Creates N subscribers with varied interests (topics from config/topics.toml, keywords, top
papers) and D days of past deliveries, stores a day's list (the bundled sample days as one list),
then runs the production path: Newsletter.plan (select, diff, write the outbox) and
Newsletter.drain (claim, render, build MIME, SMTP, record) in K worker processes, into smtp-sink
on a free loopback port. In the same run smtp-source sends the same number of bytes per message
over the same number of connections into the same sink: that is the ceiling.

Printed per run: digests/s end to end (plan + drain), the ratio to the ceiling, seconds per stage
(plan; render and build are CPU seconds inside compose, summed over workers; deliver is the rest
of the drain: SMTP, database claims and records, the loop), and peak RSS of every process.
Then, on PostgreSQL, the history effect (365 days vs none) and 1 vs K worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "newsletter" / "sample_data"
DAY = date(2026, 2, 13)
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "bench-secret-" + "x" * 40
CONNECTIONS = 8  # SMTP connections per worker process


# -- Postfix ---------------------------------------------------------------------------------


def postfix_tool(name: str) -> str:
    """Path of smtp-sink or smtp-source, installing Debian's postfix package when missing."""
    for folder in ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/bin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    if found := shutil.which(name):
        return found
    print(f"{name} not found: installing postfix (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "postfix"], check=True, env=env)
    return postfix_tool(name) if shutil.which(name) or Path("/usr/sbin", name).exists() else name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """smtp-sink on loopback; it advertises PIPELINING and discards what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        cmd = [postfix_tool("smtp-sink"), f"127.0.0.1:{self.port}", "1024"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "postfix"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def peak_rss_mb(self) -> float:
        return vm_hwm_mb(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def ceiling(sink: Sink, size: int, sessions: int, messages: int) -> float:
    """smtp-source's messages per second: same size, same connections, sessions reused (-d)."""
    cmd = [
        postfix_tool("smtp-source"),
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "digest@papers.example.org",
        "-t",
        "reader@example.org",
        f"127.0.0.1:{sink.port}",
    ]
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return messages / (time.monotonic() - started)


# -- the data set ----------------------------------------------------------------------------


def profiles() -> list[tuple[list[str], list[str]]]:
    """Interest profiles: single topics, pairs, topic + keyword, keywords only, top papers."""
    from newsletter.topics import load_taxonomy

    slugs = [t.slug for t in load_taxonomy(ROOT / "config" / "topics.toml").topics]
    keywords = ["agent", "diffusion", "reasoning", "video", "benchmark", "robot", "retrieval"]
    rng = random.Random(7)
    out: list[tuple[list[str], list[str]]] = [([], [])]  # everything: the day's top papers
    out += [([slug], []) for slug in slugs]
    out += [(rng.sample(slugs, 2), []) for _ in range(20)]
    out += [(rng.sample(slugs, 3), []) for _ in range(10)]
    out += [([rng.choice(slugs)], [rng.choice(keywords)]) for _ in range(10)]
    out += [([], [k]) for k in keywords]
    return out


def day_list() -> list[Any]:
    """The three bundled sample days as one day's list: enough papers for 10-paper digests."""
    from newsletter.sources import localfile

    papers: dict[str, Any] = {}
    for path in sorted(SAMPLE.glob("*.json")):
        result, _ = localfile.read(path)
        for paper in result.papers:
            papers.setdefault(paper.id, paper)
    return list(papers.values())


def populate(url: str, n: int, history_days: int) -> dict[str, Any]:
    from newsletter.store import Store

    store = Store(url)
    store.upgrade()
    papers = day_list()
    store.store_day(DAY, papers)
    rng = random.Random(42)
    choices = profiles()
    # Subscribers pick a profile at random, so neighbours in id order rarely share a digest.
    picks = [rng.randrange(len(choices)) for _ in range(n)]
    started = time.monotonic()
    store.bulk_add_subscribers((f"reader{i}@example.org", *choices[p]) for i, p in enumerate(picks))
    first_id = min(s.id for s in next(store.active_subscribers(1)))
    history_rows = 0
    if history_days:
        today_ids = [p.id for p in papers]

        def history() -> Iterator[tuple[int, list[str]]]:
            for i in range(n):
                # Two past papers a day (ids that are not in today's list), and for one
                # subscriber in five one of today's papers too, so the diff removes something.
                past = [
                    f"24{d % 1000:03d}.{(i * 7 + j) % 100000:05d}"
                    for d in range(history_days)
                    for j in (0, 1)
                ]
                if i % 5 == 0:
                    past.append(today_ids[i % len(today_ids)])
                yield first_id + i, list(dict.fromkeys(past))

        history_rows = store.bulk_add_history(DAY - timedelta(days=1), history())
    seconds = time.monotonic() - started
    store.close()
    return {"papers": len(papers), "history_rows": history_rows, "load_seconds": seconds}


# -- one worker process ----------------------------------------------------------------------


def settings_for(url: str, port: int, client: str) -> Any:
    from newsletter.config import load_settings

    return load_settings(
        database_url=url,
        secret_key=SECRET,
        base_url="https://papers.example.org",
        from_address="Trending Papers <digest@papers.example.org>",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_connections=CONNECTIONS,
        smtp_messages_per_connection=100_000,
        smtp_client=client,
        batch_size=2000,
    )


def worker(url: str, port: int, client: str) -> dict[str, Any]:
    """Drain the outbox with the production Newsletter.drain, timing compose's two halves."""
    import newsletter.pipeline as pipeline
    from newsletter.pipeline import Newsletter
    from newsletter.render.digest import CachedRenderer, DigestRenderer

    clock = {"render": 0.0, "build": 0.0, "bytes": 0, "messages": 0}

    def timed(name: str, func: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                clock[name] += time.perf_counter() - started

        return wrapper

    # Rendering: the shared template (cached or not), the personal values, the uncached path.
    CachedRenderer.template = timed("render", CachedRenderer.template)  # type: ignore[method-assign]
    CachedRenderer.personal = timed("render", CachedRenderer.personal)  # type: ignore[method-assign]
    DigestRenderer.render = timed("render", DigestRenderer.render)  # type: ignore[method-assign]
    build_from = pipeline.build_message_from

    def counted(func: Any) -> Any:
        def wrapper(**kwargs: Any) -> Any:
            started = time.perf_counter()
            envelope = func(**kwargs)
            clock["build"] += time.perf_counter() - started
            clock["bytes"] += len(envelope.data)
            clock["messages"] += 1
            return envelope

        return wrapper

    pipeline.build_message_from = counted(build_from)  # type: ignore[assignment]

    app = Newsletter(settings_for(url, port, client))
    started = time.monotonic()
    report = asyncio.run(app.drain())
    seconds = time.monotonic() - started
    cache = app.cached_renderer
    app.close()
    return {
        "sent": report.sent,
        "failed": sum(report.failed.values()),
        "stopped": report.stopped,
        "seconds": seconds,
        "render": clock["render"],
        "build": clock["build"],
        "bytes": clock["bytes"],
        "messages": clock["messages"],
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
        "rss_mb": vm_hwm_mb(os.getpid()),
    }


# -- one measured run ------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    n: int
    database: str
    history_days: int
    workers: int
    sent: int = 0
    plan: float = 0.0
    drain: float = 0.0
    render: float = 0.0
    build: float = 0.0
    size: int = 0
    ceiling: float = 0.0
    rss: dict[str, float] = field(default_factory=dict)
    history_rows: int = 0
    distinct: int = 0
    hits: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / (self.plan + self.drain) if self.plan + self.drain else 0.0

    @property
    def drain_rate(self) -> float:
        return self.sent / self.drain if self.drain else 0.0


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'bench.db'}"


class PgDatabase:
    def __init__(self, base: str) -> None:
        from sqlalchemy import create_engine, text

        from newsletter.store.engine import normalise_url

        self.name = f"newsletter_bench_{uuid.uuid4().hex[:10]}"
        self._admin = create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
        self._text = text
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = base.rsplit("/", 1)[0] + f"/{self.name}"

    def drop(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(self._text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


def measure(
    run: Run, sink: Sink, client: str, pg_base: str, ceiling_messages: int, tmp: Path
) -> Run:
    pg = PgDatabase(pg_base) if run.database == "postgresql" else None
    folder = Path(tempfile.mkdtemp(dir=tmp))
    url = pg.url if pg else sqlite_url(folder)
    try:
        loaded = populate(url, run.n, run.history_days)
        run.history_rows = loaded["history_rows"]
        from newsletter.pipeline import Newsletter

        app = Newsletter(settings_for(url, sink.port, client))
        started = time.monotonic()
        planned = app.plan(DAY, immediately=True)
        run.plan = time.monotonic() - started
        app.close()
        if planned.skipped:
            run.notes.append(f"skipped at plan: {dict(planned.skipped)}")
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.throughput",
                    "--_worker",
                    url,
                    str(sink.port),
                    client,
                ],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            for _ in range(run.workers)
        ]
        results = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"worker failed ({proc.returncode})")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        run.drain = time.monotonic() - started
        run.sent = sum(r["sent"] for r in results)
        run.render = sum(r["render"] for r in results)
        run.build = sum(r["build"] for r in results)
        run.size = int(
            sum(r["bytes"] for r in results) / max(1, sum(r["messages"] for r in results))
        )
        run.distinct = sum(r["cache_misses"] for r in results)
        run.hits = sum(r["cache_hits"] for r in results)
        for r in results:
            if r["stopped"] or r["failed"]:
                run.notes.append(f"worker stopped={r['stopped']} failed={r['failed']}")
        run.rss = {
            "bench": vm_hwm_mb(os.getpid()),
            "workers": sum(r["rss_mb"] for r in results),
            "smtp-sink": sink.peak_rss_mb(),
        }
        rates = [
            ceiling(sink, run.size, CONNECTIONS * run.workers, ceiling_messages) for _ in range(3)
        ]
        run.ceiling = statistics.median(rates)
    finally:
        if pg:
            pg.drop()
        shutil.rmtree(folder, ignore_errors=True)
    return run


def show(run: Run) -> None:
    ratio = run.rate / run.ceiling if run.ceiling else 0.0
    deliver = max(0.0, run.drain * run.workers - run.render - run.build)
    print(
        f"{run.label:<34} {run.database:<10} N={run.n:<7} hist={run.history_days:<3}d "
        f"K={run.workers}  sent {run.sent}\n"
        f"    end to end {run.rate:7.0f} digests/s   drain only {run.drain_rate:7.0f}/s   "
        f"ceiling (smtp-source, {run.size} B, {CONNECTIONS * run.workers} conns) "
        f"{run.ceiling:7.0f}/s   ratio {ratio:5.1%}\n"
        f"    stages: plan {run.plan:6.1f}s  render {run.render:6.1f}s  build {run.build:6.1f}s  "
        f"deliver {deliver:6.1f}s  (drain wall {run.drain:.1f}s; render/build/deliver are "
        f"worker-seconds)\n"
        f"    peak RSS MB: bench {run.rss.get('bench', 0):.0f}, "
        f"workers {run.rss.get('workers', 0):.0f}"
        f" (sum), smtp-sink {run.rss.get('smtp-sink', 0):.0f}   distinct digests rendered "
        f"{run.distinct} (cache hits {run.hits})"
        + (f"   history rows {run.history_rows}" if run.history_rows else ""),
        flush=True,
    )
    for note in run.notes:
        print(f"    note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--history-days", type=int, default=0, help="history in the main runs")
    parser.add_argument("--workers", type=int, default=2, help="worker processes on PostgreSQL")
    parser.add_argument("--client", choices=["pipelined", "aiosmtplib"], default="pipelined")
    parser.add_argument(
        "--history-subscribers",
        type=int,
        default=10_000,
        help="N for the 365-days-vs-none comparison (365 days x 2 papers each is 730 rows a "
        "subscriber)",
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get("NEWSLETTER_BENCH_POSTGRES_URL", PG_DEFAULT)
    )
    parser.add_argument("--skip-extras", action="store_true", help="only the main runs")
    args = parser.parse_args(argv)

    sink = Sink()
    runs: list[Run] = []
    ceiling_messages = 20_000
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        try:
            todo: list[Run] = []
            if args.database in ("sqlite", "both"):
                todo.append(
                    Run("SQLite, one sender", args.subscribers, "sqlite", args.history_days, 1)
                )
            if args.database in ("postgresql", "both"):
                todo.append(
                    Run(
                        "PostgreSQL, 1 worker", args.subscribers, "postgresql", args.history_days, 1
                    )
                )
                if args.workers > 1:
                    todo.append(
                        Run(
                            f"PostgreSQL, {args.workers} workers",
                            args.subscribers,
                            "postgresql",
                            args.history_days,
                            args.workers,
                        )
                    )
                if not args.skip_extras:
                    h = args.history_subscribers
                    todo.append(Run("history: none", h, "postgresql", 0, args.workers))
                    todo.append(Run("history: 365 days", h, "postgresql", 365, args.workers))
            for run in todo:
                runs.append(
                    measure(run, sink, args.client, args.postgres_url, ceiling_messages, Path(tmp))
                )
                show(runs[-1])
        finally:
            sink.close()
    by_label = {r.label: r for r in runs}
    none, full = by_label.get("history: none"), by_label.get("history: 365 days")
    if none and full:
        print(
            f"history effect: 365 days / none = {full.rate / none.rate:.3f} end to end, "
            f"{full.drain_rate / none.drain_rate:.3f} drain only"
        )
    one = by_label.get("PostgreSQL, 1 worker")
    many = by_label.get(f"PostgreSQL, {args.workers} workers")
    if one and many:
        print(
            f"workers on PostgreSQL: {args.workers} / 1 = {many.rate / one.rate:.2f} end to "
            f"end, {many.drain_rate / one.drain_rate:.2f} drain only"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
        sys.exit(0)
    sys.exit(main())
