"""What every page and API handler shares: the newsletter as the web sees it, the subscription
service, templates, the sign-up limit and the confirmation mailer."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from newsletter.config import Settings
from newsletter.links import Links
from newsletter.papers import Paper
from newsletter.records import SubscriberRecord
from newsletter.selection import rank
from newsletter.subscriptions import (
    SignUpRequest,
    SubscriberStore,
    Subscriptions,
    SuppressionLookup,
)
from newsletter.topics import Taxonomy, Topic
from newsletter.web.mailer import ConfirmationMailer, sign_up_message
from newsletter.web.security import SlidingWindowLimiter, csrf_token, set_csrf_cookie


class PaperReader(Protocol):
    """The listings the archive and the home page's sample read (store.papers)."""

    def listed_days(self) -> list[date]: ...

    def day_papers(self, day: date) -> list[Paper]: ...


class MetricsReader(Protocol):
    """The outbox figures /metrics reports (store.reports)."""

    def metrics(self) -> dict[str, Any]: ...


class WebStore(Protocol):
    @property
    def papers(self) -> PaperReader: ...

    @property
    def reports(self) -> MetricsReader: ...

    @property
    def subscribers(self) -> SubscriberStore: ...

    @property
    def suppressions(self) -> SuppressionLookup: ...


class WebNewsletter(Protocol):
    """What the web app needs from the newsletter it serves."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> WebStore: ...

    @property
    def links(self) -> Links: ...

    @property
    def taxonomy(self) -> Taxonomy: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

    def web_version(self, subscriber_id: int, day: date) -> str | None:
        """The HTML of a digest planned for the subscriber on `day`; None if there is none."""
        ...

    def close(self) -> None: ...


class Site:
    def __init__(self, newsletter: WebNewsletter) -> None:
        self.newsletter = newsletter
        self.settings = newsletter.settings
        self.links = newsletter.links
        self.store = newsletter.store
        self.subscriptions = newsletter.subscriptions
        self.mailer = ConfirmationMailer(newsletter.settings)
        self.signups = SlidingWindowLimiter(self.settings.signups_per_ip_per_hour, 3600)
        # Explicit autoescape: select_autoescape() would not cover the *.html.j2 names.
        self.templates = Environment(
            loader=FileSystemLoader(self.settings.resolved_templates_dir()),
            autoescape=True,
            undefined=StrictUndefined,
        )
        self.secure_cookies = self.settings.base_url.startswith("https://")

    def page(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        token = csrf_token(request)
        html = self.templates.get_template(f"web/{template}").render(
            name=self.settings.newsletter_name, links=self.links, csrf=token, **context
        )
        response = HTMLResponse(html, status_code=status_code)
        set_csrf_cookie(response, token, self.secure_cookies)
        return response

    def notice(
        self,
        request: Request,
        heading: str,
        *paragraphs: str,
        status_code: int = 200,
        action: str | None = None,
        button: str = "",
        button_class: str = "",
        extra_link: dict[str, str] | None = None,
    ) -> HTMLResponse:
        return self.page(
            request,
            "notice.html.j2",
            status_code,
            heading=heading,
            paragraphs=paragraphs,
            action=action,
            button=button,
            button_class=button_class,
            extra_link=extra_link,
        )

    def sign_up_later(self, request: SignUpRequest) -> None:
        """Record the sign-up and send its mail after the visitor has their answer, which is
        then the same, in content and in time, whatever the address's state."""
        self.mailer.run_later(self._sign_up(request))

    async def _sign_up(self, request: SignUpRequest) -> None:
        result = await run_in_threadpool(self.subscriptions.sign_up, request)
        if result.mail is not None:
            subscriber_id = result.subscriber_id
            await self.mailer.send(
                sign_up_message(self.settings, result.mail),
                on_failure=lambda: self.subscriptions.mail_failed(subscriber_id),
            )

    async def signed(self, purpose: str, subscriber_id: int, token: str) -> SubscriberRecord | None:
        """The subscriber a signed link belongs to; None for a forged or mangled one."""
        return await run_in_threadpool(self.subscriptions.signed, purpose, subscriber_id, token)

    def topics(self) -> list[Topic]:
        return list(self.newsletter.taxonomy.topics)

    def ranked(self, day: date) -> list[Paper]:
        """A day's papers in digest order."""
        return rank(self.store.papers.day_papers(day))


def current_site(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


# The handlers' parameter for the shared context; FastAPI fills it in on each request.
SiteDep = Annotated[Site, Depends(current_site)]


async def form_data(request: Request) -> dict[str, Any]:
    """Form fields as a dict; repeated fields (checkboxes) as lists."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        data[key] = values if key == "topics" else (values[0] if values else "")
    return data
