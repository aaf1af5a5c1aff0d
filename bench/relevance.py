"""Relevance of each way of matching, on the hand-labelled set, and the cost of selection at scale.

    python -m bench.relevance [--readers N] [--skip-scale]

Quality, on bench/relevance_set/readers.toml (labels made before any score was seen) over the
46 distinct papers of the bundled days, each reader ranking the whole pool:
- keywords: the reader's topics and keywords matched as today (newsletter.selection.select: literal
  matches ranked by popularity); embeddings: cosine of the reader's words to each paper; BM25;
  hybrid: cosine + 0.3 x BM25/max; all of them from the reader's free text alone.
- precision@5 and recall@10, means over readers who want something, per split (the targets are
  read on the held-out split) and per wording.
- selection: the hybrid with its relevance threshold and literal matches (what a digest would
  hold, cap 5): papers shown, precision of what is shown, and whether the readers who want
  nothing in the pool got an empty digest.
- feedback: each reader's first 5-paper digest (the selection above) is answered with "more like
  this" on the relevant picks and "less like this" on the others; the next digest (5 more from
  the rest of the pool) is compared with that of a twin reader who gave no feedback.

Cost, on this machine: loading the model; embedding one bundled day's papers (the largest, 25)
and the whole pool; selecting a day (25 papers, cap 10) for N readers (default 100,000) with
stored profiles vs keyword-only readers (newsletter.selection.Selector, as the planner runs today),
each in a fresh process, with its peak RSS, also at N/10 to show it does not grow with N.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import mean

import numpy as np

from newsletter.papers import Paper
from newsletter.relevance.embedding import MiniLM, Vectors
from newsletter.relevance.lexical import Bm25, normalized, query_terms
from newsletter.relevance.profile import Profile, Signal, Words, build_profile, with_feedback
from newsletter.relevance.scoring import LEXICAL_WEIGHT, Day, Reader, select_many
from newsletter.selection import Interests, Selector, rank
from newsletter.selection import select as keyword_select
from newsletter.sources import localfile
from newsletter.topics import Taxonomy, load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "newsletter" / "sample_data"
READERS = Path(__file__).resolve().parent / "relevance_set" / "readers.toml"
TOPICS = ROOT / "config" / "topics.toml"
SCALE_DAY = "2026-02-12"


@dataclass(frozen=True)
class Labelled:
    id: str
    split: str
    wording: str
    about: str
    topics: tuple[str, ...]
    keywords: tuple[str, ...]
    relevant: frozenset[str]


def load_readers() -> list[Labelled]:
    raw = tomllib.loads(READERS.read_text(encoding="utf-8"))["reader"]
    return [
        Labelled(
            r["id"],
            r["split"],
            r["wording"],
            r["about"],
            tuple(r["topics"]),
            tuple(r["keywords"]),
            frozenset(r["relevant"]),
        )
        for r in raw
    ]


def load_days() -> dict[str, list[Paper]]:
    return {
        path.stem: localfile.read(path)[0].deduplicated().papers
        for path in sorted(SAMPLE_DATA.glob("*.json"))
    }


def pool_of(days: dict[str, list[Paper]]) -> list[Paper]:
    pool: dict[str, Paper] = {}
    for papers in days.values():
        for paper in papers:
            pool.setdefault(paper.id, paper)
    return rank(list(pool.values()))


def precision_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    return sum(1 for i in ranked[:k] if i in relevant) / k


def recall_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    return sum(1 for i in ranked[:k] if i in relevant) / len(relevant)


def order(scores: np.ndarray, ids: Sequence[str]) -> list[str]:
    # The pool is in popularity order and the sort is stable: ties go to the more popular paper.
    return [ids[i] for i in np.argsort(-scores, kind="stable")]


def quality(
    readers: list[Labelled], pool: list[Paper], model: MiniLM, taxonomy: Taxonomy
) -> dict[str, dict[str, list[float]]]:
    ids = [p.id for p in pool]
    vectors = model.embed_papers(pool)
    bm25 = Bm25.of_papers(pool)
    abouts = model.embed([r.about for r in readers])
    day = Day.prepare(pool, vectors)
    rows: dict[str, dict[str, list[float]]] = {}

    def add(reader: Labelled, method: str, ranked: Sequence[str]) -> None:
        for group in (reader.split, f"{reader.split} {reader.wording}"):
            table = rows.setdefault(group, {})
            table.setdefault(f"{method} P@5", []).append(precision_at(ranked, reader.relevant, 5))
            table.setdefault(f"{method} R@10", []).append(recall_at(ranked, reader.relevant, 10))

    print("\nper reader P@5 (keywords / bm25 / embedding / hybrid):")
    for k, reader in enumerate(readers):
        if not reader.relevant:
            continue
        interests = Interests(reader.topics, reader.keywords)
        by_keywords = keyword_select(pool, interests, taxonomy, (), 10).paper_ids
        lexical = bm25.scores(query_terms(reader.about))
        cosine = vectors @ abouts[k]
        hybrid = cosine + LEXICAL_WEIGHT * normalized(lexical[None, :])[0]
        rankings = {
            "keywords": by_keywords,
            "bm25": order(lexical, ids),
            "embedding": order(cosine, ids),
            "hybrid": order(hybrid, ids),
        }
        for method, ranked in rankings.items():
            add(reader, method, ranked)
        figures = " / ".join(
            f"{precision_at(r, reader.relevant, 5):.1f}" for r in rankings.values()
        )
        print(f"  {reader.split:7s} {reader.wording:8s} {reader.id:24s} {figures}")

    print("\nselection from the free text (hybrid, threshold; cap 5) and one round of feedback:")
    now = datetime(2026, 2, 13, 12)
    for reader in readers:
        profile = build_profile(model, Words(reader.about), taxonomy, now=now)
        assert profile is not None
        # The reader's own words alone: topics would select their literal matches whatever the
        # threshold says, and the point here is what the threshold does.
        interests = Interests()
        first = next(select_many(day, [Reader(profile, interests)], taxonomy, cap=5))
        shown = first.paper_ids
        table = rows.setdefault(reader.split, {})
        if not reader.relevant:
            print(f"  {reader.id}: wants nothing in the pool, shown {len(shown)} papers")
            table.setdefault("empty when nothing is relevant", []).append(float(not shown))
            continue
        table.setdefault("selection: papers shown", []).append(len(shown))
        if shown:
            hits = sum(1 for i in shown if i in reader.relevant)
            table.setdefault("selection: precision of shown", []).append(hits / len(shown))
        signals = [
            Signal(
                c.paper.id, c.paper.id in reader.relevant, now, day.vectors[day.index[c.paper.id]]
            )
            for c in first.picks
        ]
        moved = with_feedback(profile, signals, now)
        for name, p in (("no feedback", profile), ("after feedback", moved)):
            after = next(select_many(day, [Reader(p, interests, already_sent=shown)], taxonomy, 5))
            table.setdefault(f"next digest P@5 {name}", []).append(
                precision_at(after.paper_ids, reader.relevant, 5)
            )
    return rows


def report(rows: dict[str, dict[str, list[float]]]) -> None:
    print("\nmeans (readers who want something; 'empty' over those who want nothing):")
    for group in (
        "dev",
        "dev field",
        "dev reworded",
        "heldout",
        "heldout field",
        "heldout reworded",
    ):
        table = rows.get(group, {})
        print(f"  {group}:")
        for name, values in table.items():
            print(f"    {name:34s} {mean(values):.3f}  (n={len(values)})")
    held = rows["heldout"]
    text, words = mean(held["hybrid P@5"]), mean(held["keywords P@5"])
    gain = mean(held["next digest P@5 after feedback"]) - mean(held["next digest P@5 no feedback"])
    print("\ntargets on the held-out split:")
    print(f"  free-text P@5 {text:.3f} (target >= 0.70): {'met' if text >= 0.70 else 'NOT met'}")
    delta = text - words
    print(
        f"  free-text minus keyword P@5 {delta:+.3f} (target >= +0.15): "
        f"{'met' if delta >= 0.15 else 'NOT met'}"
    )
    print(
        f"  feedback gain on the next digest {gain:+.3f} (target > 0): "
        f"{'met' if gain > 0 else 'NOT met'}"
    )


def embedding_cost(days: dict[str, list[Paper]], pool: list[Paper]) -> None:
    started = time.perf_counter()
    model = MiniLM()
    model.load()
    loaded = time.perf_counter() - started
    largest = max(days.values(), key=len)
    started = time.perf_counter()
    model.embed_papers(largest)
    day_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model.embed_papers(pool)
    pool_seconds = time.perf_counter() - started
    print("embedding cost (2 cores shared with other work; figures vary with the load):")
    print(f"  model load, with both SHA-256 checks: {loaded:.2f} s")
    print(
        f"  a day's {len(largest)} papers: {day_seconds:.2f} s "
        f"({len(largest) / day_seconds:.1f} papers/s; target < 10 s)"
    )
    print(
        f"  the pool's {len(pool)} papers: {pool_seconds:.2f} s ({len(pool) / pool_seconds:.1f}/s)"
    )


# --- scale --------------------------------------------------------------------------------------


def base_profiles() -> tuple[list[Profile], Vectors]:
    """The labelled readers' profiles and the scale day's paper vectors (what the store holds)."""
    model = MiniLM()
    taxonomy = load_taxonomy(TOPICS)
    bases = [build_profile(model, Words(r.about), taxonomy) for r in load_readers() if r.relevant]
    return [b for b in bases if b is not None], model.embed_papers(load_days()[SCALE_DAY])


def save_scale_data(path: Path) -> None:
    bases, vectors = base_profiles()
    payload = [
        {
            "vector": b.vector.tolist(),
            "terms": b.terms,
            "parts": b.parts,
            "part_vectors": b.part_vectors.tolist(),
        }
        for b in bases
    ]
    path.write_text(json.dumps({"papers": vectors.tolist(), "bases": payload}))


def load_scale_data(path: Path) -> tuple[list[Profile], Vectors]:
    data = json.loads(path.read_text())
    bases = [
        Profile(
            MiniLM.model_id,
            np.array(b["vector"], dtype=np.float32),
            np.array(b["vector"], dtype=np.float32),
            tuple(b["terms"]),
            tuple(b["parts"]),
            np.array(b["part_vectors"], dtype=np.float32),
        )
        for b in data["bases"]
    ]
    return bases, np.array(data["papers"], dtype=np.float32)


def synthetic_profiles(count: int, bases: list[Profile], seed: int = 7) -> Iterator[Reader]:
    """`count` readers made on the fly (as if read from the store a batch at a time): each a real
    reader's profile, moved by noise, with that reader's terms and phrases; some sent-before."""
    sent_pool = [p.id for p in load_days()["2026-02-11"]]
    rng = np.random.default_rng(seed)
    picker = random.Random(seed)
    for n in range(count):
        base = bases[n % len(bases)]
        noise = rng.standard_normal(base.vector.shape[0]).astype(np.float32) * 0.02
        vector = base.vector + noise
        vector /= np.linalg.norm(vector)
        profile = Profile(
            base.model_id, vector, base.anchor, base.terms, base.parts, base.part_vectors
        )
        sent = picker.sample(sent_pool, picker.randint(0, 5))
        exclude = ("survey",) if n % 20 == 0 else ()
        yield Reader(profile, exclude=exclude, already_sent=sent)


def synthetic_keyword_readers(count: int, seed: int = 7) -> Iterator[tuple[Interests, list[str]]]:
    taxonomy = load_taxonomy(TOPICS)
    slugs = [t.slug for t in taxonomy.topics]
    keywords = [k for r in load_readers() for k in r.keywords]
    sent_pool = [p.id for p in load_days()["2026-02-11"]]
    picker = random.Random(seed)
    for _ in range(count):
        topics = tuple(sorted(picker.sample(slugs, picker.randint(1, 3))))
        words = tuple(picker.sample(keywords, picker.randint(0, 2)))
        yield Interests(topics, words), picker.sample(sent_pool, picker.randint(0, 5))


def peak_rss_mb() -> float:
    # Not getrusage: on Linux ru_maxrss survives exec, so a child would report its parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale_run(mode: str, count: int, data: Path) -> dict[str, float]:
    """One measurement, meant to run in a process of its own (peak RSS is per process)."""
    taxonomy = load_taxonomy(TOPICS)
    papers = load_days()[SCALE_DAY]
    cap = 10
    if mode == "keywords":
        generated = synthetic_keyword_readers(count)
        started = time.perf_counter()
        for _ in generated:
            pass
        making = time.perf_counter() - started
        selector = Selector(rank(papers), taxonomy, cap)
        started = time.perf_counter()
        picked = sum(len(selector(i, set(s)).picks) for i, s in synthetic_keyword_readers(count))
    else:
        # Vectors come from the store: this process never loads the model, as the planner won't.
        bases, vectors = load_scale_data(data)
        day = Day.prepare(papers, vectors)
        started = time.perf_counter()
        for _ in synthetic_profiles(count, bases):
            pass
        making = time.perf_counter() - started
        started = time.perf_counter()
        readers = synthetic_profiles(count, bases)
        picked = sum(len(c.picks) for c in select_many(day, readers, taxonomy, cap))
    total = time.perf_counter() - started
    peak = peak_rss_mb()
    return {
        "total": total,
        "making": making,
        "select": total - making,
        "picks": picked,
        "rss": peak,
    }


def scale(count: int) -> None:
    print(
        f"\nselection for many readers ({SCALE_DAY}: 25 papers, cap 10), each in its own process:"
    )
    results: dict[tuple[str, int], dict[str, float]] = {}
    data = Path(tempfile.mkdtemp()) / "scale.json"
    save_scale_data(data)
    for n in (count // 10, count):
        for mode in ("keywords", "profiles"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.relevance", "--scale-run", mode, str(n), str(data)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[(mode, n)] = result
            print(
                f"  {mode:8s} {n:>7,} readers: select {result['select']:.2f} s "
                f"(+ {result['making']:.2f} s making the readers), "
                f"{result['picks'] / n:.1f} picks each, peak RSS {result['rss']:.0f} MB"
            )
    ratio = results[("profiles", count)]["select"] / results[("keywords", count)]["select"]
    print(f"  profiles / keywords at {count:,}: {ratio:.2f}x (target <= 1.5x)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scale-run", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_run:
        mode, n, data = args.scale_run
        print(json.dumps(scale_run(mode, int(n), Path(data))))
        return
    days = load_days()
    pool = pool_of(days)
    embedding_cost(days, pool)
    rows = quality(load_readers(), pool, MiniLM(), load_taxonomy(TOPICS))
    report(rows)
    if not args.skip_scale:
        scale(args.readers)


if __name__ == "__main__":
    main()
