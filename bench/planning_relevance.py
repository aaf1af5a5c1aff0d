"""Planning a day for N readers with profiles vs keyword-only, through the real Planner and store.

    python -m bench.planning_relevance [--readers N] [--database sqlite|postgresql] [--repeat R]
                                       [--only-full]

The throughput bench's data set (bench.throughput.populate: the bundled days as one list of
papers, readers with topics and keywords picked at random), planned with `Newsletter.plan` in a
fresh process per run. "keywords": the readers as they are, chosen for literally. "profiles":
every reader also wrote what they works on (one of the labelled set's interests), with the
profile stored as planning would have stored it, so a run measures selection (stored profiles
read per batch, one matrix product per batch, reasons written), not the model; the day's papers
carry their vectors as a fetch would have left them. Both data sets are built first and then
planned alternately, so the ratio is measured under the same load; figures are medians of R runs,
with each run's peak RSS, also at N/10 (unless --only-full) to show memory does not grow with the
number of readers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from bench.throughput import (
    DAY,
    PG_DEFAULT,
    PgDatabase,
    day_list,
    populate,
    reset_day,
    settings_for,
    vm_hwm_mb,
)

MODES = ("keywords", "profiles")


def add_profiles(url: str) -> int:
    """Give every subscriber one of the labelled readers' own words and its stored profile."""
    from sqlalchemy import insert, select

    from bench.relevance import load_readers
    from newsletter.clock import utcnow
    from newsletter.profiles import Profiles, words_key
    from newsletter.relevance.embedding import default_embedder
    from newsletter.relevance.profile import Embedder, Words, build_profile
    from newsletter.store import Store
    from newsletter.store.relevance import to_bytes
    from newsletter.store.schema import ReaderProfileRow, SubscriberRow
    from newsletter.topics import load_taxonomy

    store = Store(url)
    taxonomy = load_taxonomy(Path(__file__).resolve().parent.parent / "config" / "topics.toml")
    model = default_embedder()
    abouts = [r.about for r in load_readers()]
    embedder = cast(Embedder, model)  # MiniLM has Embedder's shape, not its base class
    profiles = [build_profile(embedder, Words(a), taxonomy) for a in abouts]
    # The papers' vectors, as the fetch hook stores them.
    Profiles(store.relevance, store.papers, taxonomy, model).vectors(day_list())
    now = utcnow()
    with store.session() as s:
        subscribers = s.execute(
            select(SubscriberRow.id, SubscriberRow.topics, SubscriberRow.keywords).order_by(
                SubscriberRow.id
            )
        ).all()
    rows = []
    for i, (sub_id, topics, keywords) in enumerate(subscribers):
        about, profile = abouts[i % len(abouts)], profiles[i % len(abouts)]
        assert profile is not None
        rows.append(
            {
                "subscriber_id": sub_id,
                "about": about,
                "exclude": [],
                "feedback_count": 0,
                "words_key": words_key(Words(about, tuple(topics), tuple(keywords))),
                "model_id": profile.model_id,
                "vector": to_bytes(profile.vector),
                "anchor": to_bytes(profile.anchor),
                "terms": list(profile.terms),
                "parts": list(profile.parts),
                "part_vectors": to_bytes(profile.part_vectors),
                "updated_at": now,
            }
        )
    rows_iter = iter(rows)
    with store.session() as s:
        while chunk := list(itertools.islice(rows_iter, 5000)):
            s.execute(insert(ReaderProfileRow), chunk)
    store.close()
    return len(rows)


def forget_day(url: str) -> None:
    from newsletter.store import Store

    reset_day(url)
    store = Store(url)
    store.relevance.forget_reasons(DAY)
    store.close()


def child(url: str) -> None:
    """One planning run in this (fresh) process; prints its figures as JSON."""
    from newsletter.root import Newsletter

    app = Newsletter(settings_for(url, 25, "pipelined", 1))
    started = time.perf_counter()
    report = app.plan(DAY, immediately=True)
    seconds = time.perf_counter() - started
    app.close()
    # VmHWM, not ru_maxrss: getrusage keeps the parent's peak across exec, and the parent
    # loaded the model to build the data set.
    peak = vm_hwm_mb(os.getpid())
    skipped = sum(report.skipped.values())
    print(
        json.dumps(
            {"seconds": seconds, "rss_mb": peak, "queued": report.queued, "skipped": skipped}
        )
    )


def plan_in_child(url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.planning_relevance", "--child", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def prepare(url: str, readers: int, mode: str) -> None:
    populate(url, readers, 0)
    if mode == "profiles":
        add_profiles(url)
    else:  # the same vectors stored, so the two data sets differ only in the readers
        from newsletter.root import Newsletter

        app = Newsletter(settings_for(url, 25, "pipelined", 1))
        app.profiles.vectors(day_list())
        app.close()


def measure(database: str, readers: int, repeat: int, pg_base: str) -> dict[str, dict[str, Any]]:
    """Both modes' data sets built first, then planned in turn (keywords, profiles, keywords,
    ...), so a busy spell on a shared machine falls on both rather than on one."""
    folder = Path(tempfile.mkdtemp(prefix="bench-relevance-plan-"))
    databases: dict[str, PgDatabase | None] = {}
    urls: dict[str, str] = {}
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        for mode in MODES:
            pg = databases[mode] = PgDatabase(pg_base) if database == "postgresql" else None
            urls[mode] = pg.url if pg else f"sqlite:///{folder / f'{mode}.db'}"
            prepare(urls[mode], readers, mode)
        for attempt in range(repeat):
            for mode in MODES:
                if attempt:
                    forget_day(urls[mode])
                samples[mode].append(plan_in_child(urls[mode]))
    finally:
        for pg in databases.values():
            if pg:
                pg.drop()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        mode: {
            "seconds": statistics.median(s["seconds"] for s in runs),
            "rss_mb": max(s["rss_mb"] for s in runs),
            "queued": runs[-1]["queued"],
            "skipped": runs[-1]["skipped"],
            "runs": [round(s["seconds"], 2) for s in runs],
        }
        for mode, runs in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.planning_relevance", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only-full", action="store_true", help="skip the run at N/10 (memory against N)"
    )
    parser.add_argument(
        "--postgres-url", default=os.environ.get("NEWSLETTER_BENCH_POSTGRES_URL", PG_DEFAULT)
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    sizes = (args.readers,) if args.only_full else (args.readers // 10, args.readers)
    for n in sizes:
        results = measure(args.database, n, args.repeat, args.postgres_url)
        for mode, r in results.items():
            print(
                f"{args.database:<10} N={n:<7} {mode:<8}: plan {r['seconds']:.2f}s "
                f"(runs {r['runs']}), peak RSS {r['rss_mb']:.0f} MB, "
                f"queued {int(r['queued'])}, skipped {int(r['skipped'])}",
                flush=True,
            )
        ratio = results["profiles"]["seconds"] / results["keywords"]["seconds"]
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"    N={n}: profiles / keywords = {ratio:.2f}x (target at most 1.5x); "
            f"load average {load}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
