"""Throughput of the real send path into Postfix's smtp-sink, against smtp-source's ceiling.

    python -m bench.throughput [--subscribers N] [--database sqlite|postgresql|both]
                               [--history-days D] [--processes K] [--repeat R]
    python -m bench.throughput --defaults --subscribers 20000   # the shipped defaults

Creates N subscribers with varied interests (topics from config/topics.toml, keywords, top
papers) and D days of past deliveries, stores a day's list (the bundled sample days as one list),
then runs the production `Newsletter.send` with send_processes=K: this process plans (select,
diff, write the outbox) while K-1 helper processes already send what is planned (claim,
render, build MIME, SMTP, record), then it sends too, into smtp-sink on a free loopback port.
After each send, smtp-source sends the same number of bytes per message over the same number of
connections into the same sink: that is the ceiling. Each configuration is sent R times (the
day's outbox forgotten in between) and the figures are the medians.

Printed per configuration: digests/s end to end (wall time of the whole send), the ratio to
the ceiling, seconds per stage (plan; render and build are CPU seconds inside compose, summed
over processes; deliver is the rest of the sending time: SMTP, database claims and records,
the loop), and peak RSS. Then the history effect (365 days vs none) and, on PostgreSQL, 1 vs K
processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
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
DEFAULTS_TARGET = 0.5  # share of the ceiling a send with the shipped defaults should reach


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


def reset_peak_rss() -> None:
    """Forget the peak so far (creating the data set), so the figure is the send path's own
    (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class HelperPeaks(threading.Thread):
    """Watches this process's children (the send's helper processes) and keeps the largest
    peak RSS seen: a helper's VmHWM is gone once it exits, so it is read while it runs."""

    def __init__(self, ignore: set[int]) -> None:
        super().__init__(daemon=True)
        self.ignore = ignore
        self.peak = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self._stop_event.wait(0.2):
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                pid = int(stat.parent.name)
                if fields[1] == me and pid not in self.ignore:
                    self.peak = max(self.peak, vm_hwm_mb(pid))

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


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
    from bench.loaders import bulk_add_history, bulk_add_subscribers
    from newsletter.store import Store

    store = Store(url)
    store.upgrade()
    papers = day_list()
    store.papers.store_day(DAY, papers)
    rng = random.Random(42)
    choices = profiles()
    # Subscribers pick a profile at random, so neighbours in id order rarely share a digest.
    picks = [rng.randrange(len(choices)) for _ in range(n)]
    started = time.monotonic()
    bulk_add_subscribers(
        store, ((f"reader{i}@example.org", *choices[p]) for i, p in enumerate(picks))
    )
    first = store.subscribers.by_email("reader0@example.org")
    assert first is not None
    first_id = first.id
    history_rows = 0
    if history_days:
        from newsletter.selection import rank

        today_ids = [p.id for p in rank(papers)]

        def history() -> Iterator[tuple[int, list[str]]]:
            for i in range(n):
                # Two past papers a day (ids that are not in today's list), and for one
                # subscriber in five one of the day's three top papers, which trended the day
                # before too: the diff has something to remove.
                past = [
                    f"24{d % 1000:03d}.{(i * 7 + j) % 100000:05d}"
                    for d in range(history_days)
                    for j in (0, 1)
                ]
                if i % 5 == 0:
                    past.append(today_ids[i % 3])
                yield first_id + i, list(dict.fromkeys(past))

        history_rows = bulk_add_history(store, DAY - timedelta(days=1), history())
    seconds = time.monotonic() - started
    store.close()
    return {"papers": len(papers), "history_rows": history_rows, "load_seconds": seconds}


# -- one measured run ------------------------------------------------------------------------


def settings_for(
    url: str, port: int, client: str, processes: int, connections: int = CONNECTIONS
) -> Any:
    """The bench's tuned settings; processes=0 means the shipped defaults for everything
    about sending (processes, connections, client, messages per connection)."""
    from newsletter.config import load_settings

    tuned: dict[str, Any] = {
        "smtp_connections": connections,
        "smtp_messages_per_connection": 100_000,
        "smtp_client": client,
        "send_processes": processes,
    }
    return load_settings(
        database_url=url,
        secret_key=SECRET,
        base_url="https://papers.example.org",
        from_address="Trending Papers <digest@papers.example.org>",
        smtp_host="127.0.0.1",
        smtp_port=port,
        **(tuned if processes else {}),
    )


@dataclass
class Sample:
    """One send of the whole day, and the ceiling measured right after it."""

    sent: int
    wall: float
    plan: float
    drain: float
    render: float
    build: float
    ceiling: float
    cpu: float  # user + system seconds of the send's processes (plan included)

    @property
    def rate(self) -> float:
        return self.sent / self.wall if self.wall else 0.0

    @property
    def drain_rate(self) -> float:
        return self.sent / self.drain if self.drain else 0.0

    @property
    def ratio(self) -> float:
        return self.rate / self.ceiling if self.ceiling else 0.0


@dataclass
class Run:
    label: str
    n: int
    database: str
    history_days: int
    processes: int  # 0: the shipped defaults (see settings_for)
    samples: list[Sample] = field(default_factory=list)
    connections: int = CONNECTIONS  # per process, as sent with
    defaults: bool = False  # sent with the shipped defaults; processes says what they chose
    size: int = 0
    rss: dict[str, float] = field(default_factory=dict)
    history_rows: int = 0
    distinct: int = 0
    hits: int = 0
    notes: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(sample, name) for sample in self.samples)

    @property
    def rate(self) -> float:
        return self.median("rate")

    @property
    def drain_rate(self) -> float:
        return self.median("drain_rate")


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


def reset_day(url: str) -> None:
    """Forget the day's outbox and sent log, so the same data set can be sent again."""
    from sqlalchemy import Date, bindparam, text

    from newsletter.store import Store

    store = Store(url)
    day = {"day": DAY}
    with store.engine.begin() as conn:
        for statement in (
            "DELETE FROM sent_papers WHERE delivery_id IN "
            "(SELECT id FROM deliveries WHERE digest_date = :day)",
            "DELETE FROM deliveries WHERE digest_date = :day",
            "DELETE FROM digest_runs WHERE digest_date = :day",
        ):
            conn.execute(text(statement).bindparams(bindparam("day", type_=Date)), day)
    if store.dialect == "postgresql":  # the next run should not wade through dead rows
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE deliveries, sent_papers, digest_runs"))
    store.close()


def measure(
    run: Run,
    sink: Sink,
    client: str,
    pg_base: str,
    ceiling_messages: int,
    tmp: Path,
    repeat: int,
) -> Run:
    """`repeat` production sends of the day (plan, then deliver, in run.processes processes)
    into the sink, each followed by a ceiling measurement: the figures are their medians."""
    pg = PgDatabase(pg_base) if run.database == "postgresql" else None
    folder = Path(tempfile.mkdtemp(dir=tmp))
    url = pg.url if pg else sqlite_url(folder)
    try:
        # In a process of its own, so that what creating the data set leaves allocated does
        # not count towards the send path's peak RSS.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            loaded = pool.submit(populate, url, run.n, run.history_days).result()
        run.history_rows = loaded["history_rows"]
        for attempt in range(repeat):
            if attempt:
                reset_day(url)
            send_once(run, url, sink, client, ceiling_messages)
    finally:
        if pg:
            pg.drop()
        shutil.rmtree(folder, ignore_errors=True)
    return run


def cpu_seconds() -> float:
    """User and system time of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def send_once(run: Run, url: str, sink: Sink, client: str, ceiling_messages: int) -> None:
    from newsletter.root import Newsletter

    processes = 0 if run.defaults else run.processes
    app = Newsletter(settings_for(url, sink.port, client, processes, run.connections))
    if run.defaults:  # what the defaults chose on this machine
        run.processes = app.settings.send_processes
        run.connections = app.settings.smtp_connections
    sizes: list[int] = []
    compose = app.composer.compose

    def measured(delivery: Any) -> Any:
        envelope = compose(delivery)
        if len(sizes) < 1000:
            sizes.append(len(envelope.data))
        return envelope

    app.composer.compose = measured  # type: ignore[method-assign]
    reset_peak_rss()
    helpers = HelperPeaks({sink.proc.pid})
    helpers.start()
    cpu_before = cpu_seconds()
    started = time.monotonic()
    report = asyncio.run(app.send(DAY, now=True))
    wall = time.monotonic() - started
    helper_peak = helpers.stop()
    cache = app.composer.cached_renderer
    app.close()
    cpu = cpu_seconds() - cpu_before  # the helpers have ended: counted as children
    run.size = int(statistics.mean(sizes)) if sizes else 0
    run.distinct, run.hits = cache.misses, cache.hits
    if report.plan.skipped and not run.notes:
        run.notes.append(f"skipped at plan: {dict(report.plan.skipped)}")
    if report.drain.stopped or report.drain.failed:
        run.notes.append(f"stopped={report.drain.stopped} failed={dict(report.drain.failed)}")
    rss = {"bench": vm_hwm_mb(os.getpid()), "helper": helper_peak}
    run.rss = {k: max(v, run.rss.get(k, 0.0)) for k, v in rss.items()}
    run.rss["smtp-sink"] = sink.peak_rss_mb()
    run.samples.append(
        Sample(
            sent=report.drain.sent,
            wall=wall,
            plan=report.plan.seconds,
            drain=report.drain.seconds,
            render=report.drain.render_seconds,
            build=report.drain.build_seconds,
            ceiling=ceiling(sink, run.size, run.connections * run.processes, ceiling_messages),
            cpu=cpu,
        )
    )


def show(run: Run) -> None:
    m = run.median
    deliver = max(0.0, m("drain") * run.processes - m("render") - m("build"))
    overlap = ", overlapping the plan" if run.processes > 1 else ", after the plan"
    helper = f", largest helper {run.rss.get('helper', 0):.0f}" if run.processes > 1 else ""
    each = ", ".join(f"{s.rate:.0f}/s ({s.ratio:.1%})" for s in run.samples)
    print(
        f"{run.label:<34} {run.database:<10} N={run.n:<7} hist={run.history_days:<3}d "
        f"processes={run.processes}  sent {run.samples[-1].sent}  (medians of {len(run.samples)} "
        f"runs: {each})\n"
        f"    end to end {run.rate:7.0f} digests/s   sending only {run.drain_rate:7.0f}/s   "
        f"ceiling (smtp-source, {run.size} B, {run.connections * run.processes} conns) "
        f"{m('ceiling'):7.0f}/s   ratio {m('ratio'):5.1%}\n"
        f"    stages: plan {m('plan'):6.1f}s  render {m('render'):6.1f}s  "
        f"build {m('build'):6.1f}s  deliver {deliver:6.1f}s  (wall {m('wall'):.1f}s, "
        f"sending {m('drain'):.1f}s of it{overlap}; render/build/deliver are process-seconds)\n"
        f"    peak RSS MB: bench {run.rss.get('bench', 0):.0f} (plans and sends){helper}, "
        f"smtp-sink {run.rss.get('smtp-sink', 0):.0f}   "
        f"distinct digests rendered {run.distinct} (cache hits {run.hits}, in the planning "
        f"process)" + (f"   history rows {run.history_rows}" if run.history_rows else "") + "\n"
        f"    CPU of the send's processes: {m('cpu') / max(1, run.samples[-1].sent) * 1e6:.0f} us "
        f"a message sent (user + system, planning included)",
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
    parser.add_argument(
        "--processes", type=int, default=2, help="processes of each `send` (send_processes)"
    )
    parser.add_argument("--client", choices=["pipelined", "aiosmtplib"], default="pipelined")
    parser.add_argument(
        "--history-subscribers",
        type=int,
        default=20_000,
        help="N for the 365-days-vs-none comparison (365 days x 2 papers each is 730 rows a "
        "subscriber)",
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get("NEWSLETTER_BENCH_POSTGRES_URL", PG_DEFAULT)
    )
    parser.add_argument("--skip-extras", action="store_true", help="only the main runs")
    parser.add_argument(
        "--history-only", action="store_true", help="only the 365-days-vs-none comparison"
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="send with the shipped defaults (processes and connections chosen from this "
        "machine, default client and messages per connection) instead of the tuned settings; "
        f"prints the share of the ceiling against the target of {DEFAULTS_TARGET * 100:.0f}%%",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="sends per configuration; figures are medians"
    )
    args = parser.parse_args(argv)

    sink = Sink()
    runs: list[Run] = []
    ceiling_messages = 20_000
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        try:
            todo: list[Run] = []
            k, h, n, d = (
                args.processes,
                args.history_subscribers,
                args.subscribers,
                args.history_days,
            )
            if args.defaults:
                for database in ("sqlite", "postgresql"):
                    if args.database in (database, "both"):
                        todo.append(Run("shipped defaults", n, database, d, 0, defaults=True))
                        # What `send` did before the defaults followed the machine.
                        former = Run("former defaults", n, database, d, 1, connections=4)
                        todo.append(former)
            elif args.database in ("sqlite", "both") and not args.history_only:
                todo.append(Run(f"SQLite, {k} processes", n, "sqlite", d, k))
            if args.database in ("postgresql", "both") and not (args.defaults or args.history_only):
                todo.append(Run("PostgreSQL, 1 process", n, "postgresql", d, 1))
                if k > 1:
                    todo.append(Run(f"PostgreSQL, {k} processes", n, "postgresql", d, k))
            if not args.skip_extras and not args.defaults:
                database = "postgresql" if args.database != "sqlite" else "sqlite"
                todo.append(Run("history: none", h, database, 0, k))
                todo.append(Run("history: 365 days", h, database, 365, k))
            for run in todo:
                runs.append(
                    measure(
                        run,
                        sink,
                        args.client,
                        args.postgres_url,
                        ceiling_messages,
                        Path(tmp),
                        args.repeat,
                    )
                )
                show(runs[-1])
        finally:
            sink.close()
    former_runs = {r.database: r for r in runs if r.label == "former defaults"}
    for run in runs:
        if run.defaults:
            share = run.median("ratio")
            if was := former_runs.get(run.database):
                print(
                    f"former defaults on {run.database} (1 process x 4 connections): "
                    f"{was.median('ratio'):.1%} of the ceiling, {was.rate:.0f}/s; shipped "
                    f"defaults {run.rate:.0f}/s = {run.rate / was.rate:.2f} times"
                )
            verdict = "meets" if share >= DEFAULTS_TARGET else "misses"
            print(
                f"shipped defaults on {run.database}: {share:.1%} of the smtp-source ceiling "
                f"({run.processes} processes x {run.connections} connections; {verdict} the "
                f"target of {DEFAULTS_TARGET:.0%})"
            )
    by_label = {r.label: r for r in runs}
    none, full = by_label.get("history: none"), by_label.get("history: 365 days")
    if none and full:
        print(
            f"history effect: 365 days / none = {full.rate / none.rate:.3f} end to end, "
            f"{full.drain_rate / none.drain_rate:.3f} sending only; as shares of each one's "
            f"ceiling {full.median('ratio'):.1%} / {none.median('ratio'):.1%} = "
            f"{full.median('ratio') / none.median('ratio'):.3f}"
        )
    one = by_label.get("PostgreSQL, 1 process")
    many = by_label.get(f"PostgreSQL, {args.processes} processes")
    if one and many:
        print(
            f"processes on PostgreSQL: {args.processes} / 1 = {many.rate / one.rate:.2f} end to "
            f"end, {many.drain_rate / one.drain_rate:.2f} sending only"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
