"""What the templates see of a paper: display-ready, escaped later by Jinja, links vetted."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.papers import Paper
from newsletter.selection import Pick
from newsletter.text import safe_url, truncate

AUTHORS_SHOWN = 3
BLURB_LIMIT = 320


@dataclass(frozen=True)
class PaperLink:
    label: str
    url: str


@dataclass(frozen=True)
class PaperView:
    id: str
    title: str
    url: str
    byline: str
    upvotes: int
    comments: int
    matched: tuple[str, ...]
    blurb: str
    links: tuple[PaperLink, ...]
    why: str = ""  # the planner's reason, when it is more than the matched labels say

    @property
    def comments_label(self) -> str:
        return f"{self.comments} comment" + ("" if self.comments == 1 else "s")

    @property
    def meta_text(self) -> str:
        """Votes, comments and matched interests on one line; a count of none is not shown."""
        votes = [f"▲ {self.upvotes}"] if self.upvotes else []
        comments = [self.comments_label] if self.comments else []
        return " · ".join([*votes, *comments, *self.matched])


def byline(paper: Paper) -> str:
    """First authors and "et al.", then the organisation when there is one."""
    names = paper.authors[:AUTHORS_SHOWN]
    people = ", ".join(names)
    if people and paper.author_count > len(names):
        people += " et al."
    elif not people and paper.author_count:
        people = f"{paper.author_count} authors"
    parts = [p for p in (people, paper.organization) if p]
    return " · ".join(parts)


def shown_reason(reason: str) -> str:
    """The planner's reason as the digest shows it: a literal match is already on the paper's
    labels, so only a reason by meaning ("close to your interest in ...") adds a line."""
    return "" if not reason or reason.startswith("matches ") else reason


def paper_view(pick: Pick, reason: str = "") -> PaperView:
    paper = pick.paper
    links = [PaperLink("arXiv", paper.arxiv_url), PaperLink("PDF", paper.pdf_url)]
    if repo := safe_url(paper.github_repo):
        stars = f" ★ {paper.github_stars:,}" if paper.github_stars else ""
        links.append(PaperLink(f"Code{stars}", repo))
    if page := safe_url(paper.project_page):
        links.append(PaperLink("Project page", page))
    return PaperView(
        id=paper.id,
        title=paper.title,
        # A paper only arXiv listed gets its arXiv page, not a Hugging Face page that may not exist.
        url=paper.page_url if paper.on_hugging_face else paper.arxiv_url,
        byline=byline(paper),
        upvotes=paper.upvotes,
        comments=paper.comments,
        matched=pick.matched,
        blurb=truncate(paper.ai_summary or paper.abstract, BLURB_LIMIT),
        links=tuple(links),
        why=shown_reason(reason),
    )
