"""Papers and the days they were listed on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from sqlalchemy import delete, func, select

from newsletter.clock import utcnow
from newsletter.papers import Paper
from newsletter.records import DayListing
from newsletter.store.backend import Backend
from newsletter.store.schema import FetchRow, ListingRow, PaperRow


class Papers:
    def __init__(self, db: Backend) -> None:
        self._db = db

    def store_day(self, day: date, papers: Sequence[Paper], *, replace: bool = False) -> DayListing:
        """Upsert `papers` and add them to `day`'s list, which is the union of every fetch of
        the day (the HF list, then arXiv feeds, or a later and fuller fetch); `replace` makes
        them the whole list instead. Papers the day lists already keep their place.

        Safe against a concurrent fetch of an overlapping day: new papers are first inserted as
        bare rows with ON CONFLICT DO NOTHING, so whoever comes second updates instead of
        failing on the primary key.
        """
        if not papers:
            return DayListing(0, 0, len(self.day_paper_ids(day)))
        now = utcnow()
        insert = self._db.insert
        with self._db.session() as s:
            s.execute(
                insert(PaperRow)
                .values(
                    [
                        {
                            "id": p.id,
                            "title": p.title,
                            "abstract": "",
                            "authors": [],
                            "author_count": 0,
                            "upvotes": 0,
                            "comments": 0,
                            "ai_keywords": [],
                            "categories": [],
                            "first_seen": now,
                            "updated_at": now,
                        }
                        for p in papers
                    ]
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            rows = {
                row.id: row
                for row in s.scalars(
                    select(PaperRow)
                    .where(PaperRow.id.in_([p.id for p in papers]))
                    .with_for_update()
                )
            }
            for paper in papers:
                _merge_paper(rows[paper.id], paper, now)
            if replace:
                s.execute(delete(ListingRow).where(ListingRow.day == day))
            positions = s.execute(
                select(ListingRow.paper_id, ListingRow.position).where(ListingRow.day == day)
            )
            listed = {paper_id: position for paper_id, position in positions}
            fresh = [p for p in papers if p.id not in listed]
            start = max(listed.values(), default=-1) + 1
            if fresh:
                # A racing fetch of the same day may have listed one meanwhile: it keeps its place.
                s.execute(
                    insert(ListingRow)
                    .values(
                        [
                            {"day": day, "paper_id": p.id, "position": start + i}
                            for i, p in enumerate(fresh)
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["day", "paper_id"])
                )
            return DayListing(len(fresh), len(papers) - len(fresh), len(listed) + len(fresh))

    def day_paper_ids(self, day: date) -> list[str]:
        with self._db.session() as s:
            return list(
                s.scalars(
                    select(ListingRow.paper_id)
                    .where(ListingRow.day == day)
                    .order_by(ListingRow.position)
                )
            )

    def record_fetch(self, day: date, source: str, papers: int) -> None:
        """Remember that `source` was fetched for `day` and listed `papers` (0: an empty day)."""
        row = {"day": day, "source": source[:200], "papers": papers, "fetched_at": utcnow()}
        statement = self._db.insert(FetchRow).values(row)
        with self._db.session() as s:
            s.execute(
                statement.on_conflict_do_update(
                    index_elements=["day", "source"],
                    set_={"papers": papers, "fetched_at": row["fetched_at"]},
                )
            )

    def known_empty(self, day: date) -> bool:
        """Whether `day` was fetched and listed nothing (a weekend): not worth fetching again."""
        with self._db.session() as s:
            fetched = s.scalar(select(func.count()).where(FetchRow.day == day))
            listed = s.scalar(select(func.count()).where(ListingRow.day == day))
            return bool(fetched) and not listed

    def day_papers(self, day: date) -> list[Paper]:
        with self._db.session() as s:
            rows = s.scalars(
                select(PaperRow)
                .join(ListingRow, ListingRow.paper_id == PaperRow.id)
                .where(ListingRow.day == day)
                .order_by(ListingRow.position)
            )
            return [_paper(row) for row in rows]

    def listed_between(self, first: date, last: date) -> list[Paper]:
        """Each paper listed on any day from `first` to `last`, once, in the order the days
        listed them (the weekly digest's last tie-breaker is that announcement order)."""
        with self._db.session() as s:
            rows = s.execute(
                select(PaperRow, ListingRow.day)
                .join(ListingRow, ListingRow.paper_id == PaperRow.id)
                .where(ListingRow.day.between(first, last))
                .order_by(ListingRow.day, ListingRow.position)
            )
            papers: dict[str, Paper] = {}
            for row, _day in rows:
                if row.id not in papers:
                    papers[row.id] = _paper(row)
            return list(papers.values())

    def by_id(self, ids: Iterable[str]) -> dict[str, Paper]:
        with self._db.session() as s:
            rows = s.scalars(select(PaperRow).where(PaperRow.id.in_(list(ids))))
            return {row.id: _paper(row) for row in rows}

    def listed_days(self) -> list[date]:
        with self._db.session() as s:
            return list(s.scalars(select(ListingRow.day).distinct().order_by(ListingRow.day)))


def _paper(row: PaperRow) -> Paper:
    return Paper(
        id=row.id,
        title=row.title,
        abstract=row.abstract,
        authors=list(row.authors or []),
        author_count=row.author_count,
        organization=row.organization,
        upvotes=row.upvotes,
        comments=row.comments,
        ai_summary=row.ai_summary,
        ai_keywords=list(row.ai_keywords or []),
        github_repo=row.github_repo,
        github_stars=row.github_stars,
        project_page=row.project_page,
        published_on=row.published_on,
        categories=list(row.categories or []),
    )


def _merge_paper(row: PaperRow, paper: Paper, now: datetime) -> None:
    """Fold a fresh copy of a paper into its stored row.

    Sources differ in what they know (arXiv has no upvotes, older HF days lack AI summaries), so
    a field only changes when the new copy has a value; engagement only goes up, since a later
    listing of the same paper reports the newer count.
    """
    row.title = paper.title
    row.abstract = paper.abstract or row.abstract or ""
    if paper.authors:
        row.authors = paper.authors
        row.author_count = paper.author_count
    row.author_count = row.author_count or paper.author_count
    row.organization = paper.organization or row.organization
    row.upvotes = max(row.upvotes or 0, paper.upvotes)
    row.comments = max(row.comments or 0, paper.comments)
    row.ai_summary = paper.ai_summary or row.ai_summary
    row.ai_keywords = paper.ai_keywords or row.ai_keywords or []
    row.github_repo = paper.github_repo or row.github_repo
    row.github_stars = paper.github_stars if paper.github_stars is not None else row.github_stars
    row.project_page = paper.project_page or row.project_page
    row.published_on = paper.published_on or row.published_on
    row.categories = list(dict.fromkeys([*(row.categories or []), *paper.categories]))
    row.updated_at = now
