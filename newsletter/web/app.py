"""The web app: server-rendered pages that work without JavaScript, plus the JSON API.

Every link on a page and in a mail is built from the configured base URL; the Host header a
request arrives with is never used for one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from newsletter.addresses import InvalidAddress
from newsletter.config import Settings, load_settings
from newsletter.digest import Pick
from newsletter.errors import ConfigError, NewsletterError
from newsletter.pipeline import Newsletter
from newsletter.render.digest import day_label
from newsletter.render.views import paper_view
from newsletter.schedule import timezone_names
from newsletter.store import SubscriberRecord
from newsletter.web import api
from newsletter.web.archive import atom_feed
from newsletter.web.mailer import ConfirmationMailer
from newsletter.web.metrics import render_metrics
from newsletter.web.security import (
    CSRF_FIELD,
    SECURITY_HEADERS,
    SlidingWindowLimiter,
    client_ip,
    csrf_token,
    csrf_valid,
    set_csrf_cookie,
)
from newsletter.web.subscriptions import Schedule, Subscriptions, split_keywords

log = logging.getLogger(__name__)
SAMPLE_SIZE = 5
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Site:
    """What every route needs: the newsletter, the subscription actions, templates, limits."""

    def __init__(self, newsletter: Newsletter) -> None:
        self.newsletter = newsletter
        self.settings = newsletter.settings
        self.subscriptions = Subscriptions(newsletter)
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
            name=self.settings.newsletter_name,
            links=self.newsletter.links,
            csrf=token,
            **context,
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

    def send_signup_mail(self, subscriber_id: int | None, mail: Any) -> None:
        if mail is not None and subscriber_id is not None:
            self.mailer.send_later(
                mail, on_failure=lambda: self.subscriptions.mail_failed(subscriber_id)
            )

    def topics(self) -> list[Any]:
        return list(self.newsletter.taxonomy.topics)


def create_app(
    settings: Settings | None = None, *, demo: bool = False, newsletter: Newsletter | None = None
) -> FastAPI:
    """The app; pass `newsletter` to share one (and its database pool) with a worker."""
    newsletter = newsletter or Newsletter(settings or load_settings(), demo=demo)
    site = Site(newsletter)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await site.mailer.drain()
        newsletter.close()

    app = FastAPI(
        title=f"{newsletter.settings.newsletter_name} API",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.site = site

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if not request.url.path.startswith("/api/docs"):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    register_pages(app, site)
    app.include_router(api.router(site))
    return app


async def form_data(request: Request) -> dict[str, Any]:
    """Form fields as a dict; repeated fields (checkboxes) as lists."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        data[key] = values if key == "topics" else (values[0] if values else "")
    return data


def register_pages(app: FastAPI, site: Site) -> None:
    # The pages are for people; the OpenAPI docs describe the JSON API only.
    pages = APIRouter(include_in_schema=False)
    links = site.newsletter.links
    store = site.newsletter.store

    async def signed(purpose: str, subscriber_id: int, token: str) -> SubscriberRecord | None:
        """The subscriber a signed link belongs to; None for a forged or mangled one."""
        return await run_in_threadpool(site.subscriptions.signed, purpose, subscriber_id, token)

    @pages.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> HTMLResponse:
        return await home_page(request, {}, [])

    async def home_page(
        request: Request, form: dict[str, Any], errors: list[str], status_code: int = 200
    ) -> HTMLResponse:
        days = await run_in_threadpool(store.listed_days)
        sample, sample_date = [], None
        if days:
            sample_date = days[-1]
            ranked = await run_in_threadpool(site.newsletter.day_papers, sample_date)
            sample = [paper_view(Pick(p, ())) for p in ranked[:SAMPLE_SIZE]]
        return site.page(
            request,
            "home.html.j2",
            status_code,
            topics=site.topics(),
            form={
                "email": form.get("email"),
                "topics": form.get("topics", []),
                "keywords": form.get("keywords"),
            },
            errors=errors,
            sample=sample,
            sample_date=sample_date,
            sample_day=day_label(sample_date) if sample_date else "",
        )

    @pages.post("/subscribe", response_class=HTMLResponse)
    async def subscribe(request: Request) -> HTMLResponse:
        form = await form_data(request)
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            return await home_page(request, form, ["Your session expired; please try again."], 400)
        if not site.signups.allow(client_ip(request, site.settings.trusted_proxy_hops)):
            return site.notice(
                request,
                "Too many sign-ups",
                "Too many sign-ups from your network. Please try again later.",
                status_code=429,
            )
        if form.get("website"):  # the honeypot: only bots fill a field nobody can see
            log.info("honeypot sign-up ignored")
        else:
            try:
                result = await run_in_threadpool(
                    site.subscriptions.sign_up,
                    str(form.get("email", "")),
                    form.get("topics", []),
                    split_keywords(form.get("keywords")),
                )
            except (InvalidAddress, ConfigError) as exc:
                return await home_page(request, form, [str(exc)], 400)
            site.send_signup_mail(result.subscriber_id, result.mail)
        return site.notice(
            request,
            "Check your inbox",
            "If the address can receive mail, a message is on its way. Open the link in it to "
            "confirm your subscription.",
            "Nothing arrives? Look in the spam folder, or try again in a few minutes.",
        )

    @pages.get("/confirm/{token}", response_class=HTMLResponse)
    async def confirm_page(request: Request, token: str) -> HTMLResponse:
        # A GET only shows the button: mail scanners follow links and must not confirm.
        if not site.subscriptions.confirmation_valid(token):
            return expired_link(request)
        return site.notice(
            request,
            "Confirm your subscription",
            "One more click and the first digest arrives tomorrow morning.",
            action=f"{links.base_url}/confirm/{token}",
            button="Confirm my subscription",
        )

    def expired_link(request: Request) -> HTMLResponse:
        return site.notice(
            request,
            "This link has expired",
            "Confirmation links work for a limited time. Subscribe again to get a fresh one.",
            status_code=400,
            extra_link={"url": links.home(), "label": "Subscribe again"},
        )

    @pages.post("/confirm/{token}", response_model=None)
    async def confirm(request: Request, token: str) -> Response:
        form = await form_data(request)
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            return site.notice(
                request,
                "Please press the button again",
                "Your session expired.",
                status_code=400,
                action=f"{links.base_url}/confirm/{token}",
                button="Confirm my subscription",
            )
        record = await run_in_threadpool(site.subscriptions.confirm, token)
        if record is None:
            return expired_link(request)
        return RedirectResponse(links.preferences(record.id) + "?welcome=1", status_code=303)

    @pages.get("/preferences/{subscriber_id}/{token}", response_class=HTMLResponse)
    async def preferences(request: Request, subscriber_id: int, token: str) -> HTMLResponse:
        record = await signed("preferences", subscriber_id, token)
        if record is None:
            return not_found(request)
        return preferences_page(
            request,
            record,
            saved=bool(request.query_params.get("saved")),
            welcome=bool(request.query_params.get("welcome")),
        )

    def preferences_page(
        request: Request,
        record: SubscriberRecord,
        saved: bool = False,
        welcome: bool = False,
        errors: list[str] | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        base = links.preferences(record.id)
        return site.page(
            request,
            "preferences.html.j2",
            status_code,
            subscriber=record,
            topics=site.topics(),
            action=base,
            export_url=f"{base}/export",
            delete_url=f"{base}/delete",
            unsubscribe_url=links.unsubscribe(record.id),
            weekdays=WEEKDAYS,
            timezones=timezone_names(),
            chosen_timezone=record.timezone or site.settings.default_timezone,
            chosen_hour=record.delivery_hour
            if record.delivery_hour is not None
            else site.settings.default_delivery_hour,
            chosen_weekday=record.weekday
            if record.weekday is not None
            else site.settings.weekly_weekday,
            saved=saved,
            welcome=welcome,
            errors=errors or [],
        )

    async def preferences_form(
        request: Request, subscriber_id: int, token: str
    ) -> tuple[SubscriberRecord, dict[str, Any]] | HTMLResponse:
        """A form posted from the preferences page: its signed link and its CSRF token checked,
        or the page to answer with instead."""
        record = await signed("preferences", subscriber_id, token)
        if record is None:
            return not_found(request)
        form = await form_data(request)
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            return preferences_page(
                request, record, errors=["Your session expired; please try again."], status_code=400
            )
        return record, form

    @pages.post("/preferences/{subscriber_id}/{token}", response_model=None)
    async def save_preferences(request: Request, subscriber_id: int, token: str) -> Response:
        checked = await preferences_form(request, subscriber_id, token)
        if isinstance(checked, Response):
            return checked
        record, form = checked
        try:
            await run_in_threadpool(
                site.subscriptions.save_preferences,
                subscriber_id,
                form.get("topics", []),
                split_keywords(form.get("keywords")),
                str(form.get("frequency") or "daily"),
                bool(form.get("paused")),
                Schedule.parse(form.get("timezone"), form.get("hour"), form.get("weekday")),
            )
        except (ConfigError, ValueError) as exc:
            return preferences_page(request, record, errors=[str(exc)], status_code=400)
        return RedirectResponse(links.preferences(subscriber_id) + "?saved=1", status_code=303)

    @pages.get("/preferences/{subscriber_id}/{token}/export")
    async def export(subscriber_id: int, token: str) -> Response:
        record = await signed("preferences", subscriber_id, token)
        data = await run_in_threadpool(store.export_subscriber, subscriber_id) if record else None
        if data is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(
            data, headers={"Content-Disposition": 'attachment; filename="my-newsletter-data.json"'}
        )

    @pages.post("/preferences/{subscriber_id}/{token}/delete", response_class=HTMLResponse)
    async def delete(request: Request, subscriber_id: int, token: str) -> HTMLResponse:
        checked = await preferences_form(request, subscriber_id, token)
        if isinstance(checked, HTMLResponse):
            return checked
        await run_in_threadpool(store.delete_subscriber_by_id, subscriber_id)
        return site.notice(
            request,
            "Your data is deleted",
            "Your address, preferences and delivery history are gone.",
            extra_link={"url": links.home(), "label": "Back to the home page"},
        )

    @pages.get("/unsubscribe/{subscriber_id}/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(request: Request, subscriber_id: int, token: str) -> HTMLResponse:
        record = await signed("unsubscribe", subscriber_id, token)
        if record is None:
            return not_found(request)
        if record.status == "unsubscribed":
            return unsubscribed_notice(request, subscriber_id)
        return site.notice(
            request,
            "Unsubscribe?",
            f"{record.email} will get no more digests.",
            action=links.unsubscribe(subscriber_id),
            button="Unsubscribe",
        )

    def unsubscribed_notice(request: Request, subscriber_id: int) -> HTMLResponse:
        token = links.token("unsubscribe", str(subscriber_id))
        return site.notice(
            request,
            "You are unsubscribed",
            "No more digests will be sent to this address.",
            "Changed your mind?",
            action=f"{links.base_url}/resubscribe/{subscriber_id}/{token}",
            button="Resubscribe",
            button_class="secondary",
        )

    @pages.post("/unsubscribe/{subscriber_id}/{token}", response_class=HTMLResponse)
    async def unsubscribe(request: Request, subscriber_id: int, token: str) -> HTMLResponse:
        # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" with no cookie
        # and must get a 2xx without a redirect. The signed URL is the authorisation, so the
        # same handler serves the page's button.
        record = await signed("unsubscribe", subscriber_id, token)
        if record is None:
            return not_found(request)
        await run_in_threadpool(store.unsubscribe, subscriber_id)
        return unsubscribed_notice(request, subscriber_id)

    @pages.post("/resubscribe/{subscriber_id}/{token}", response_class=HTMLResponse)
    async def resubscribe(request: Request, subscriber_id: int, token: str) -> HTMLResponse:
        record = await signed("unsubscribe", subscriber_id, token)
        form = await form_data(request)
        if record is None or not csrf_valid(request, form.get(CSRF_FIELD)):
            return not_found(request)
        await run_in_threadpool(store.resubscribe, subscriber_id)
        return site.notice(
            request,
            "Welcome back",
            "Your digests start again tomorrow.",
            extra_link={
                "url": links.preferences(subscriber_id),
                "label": "Review your preferences",
            },
        )

    @pages.get("/digest/{day}/{subscriber_id}/{token}", response_class=HTMLResponse)
    async def web_version(
        request: Request, day: date, subscriber_id: int, token: str
    ) -> HTMLResponse:
        if not links.verify("view", f"{subscriber_id}/{day.isoformat()}", token):
            return not_found(request)
        html = await run_in_threadpool(site.newsletter.web_version, subscriber_id, day)
        return HTMLResponse(html) if html is not None else not_found(request)

    @pages.get("/archive", response_class=HTMLResponse)
    async def archive(request: Request) -> HTMLResponse:
        days = await run_in_threadpool(store.listed_days)
        return site.page(request, "archive.html.j2", days=list(reversed(days)), day_label=day_label)

    @pages.get("/archive.atom")
    async def archive_feed() -> Response:
        days = await run_in_threadpool(store.listed_days)
        recent = list(reversed(days))[:30]
        papers = {d: await run_in_threadpool(site.newsletter.day_papers, d) for d in recent}
        return Response(
            atom_feed(site.settings.newsletter_name, links, papers),
            media_type="application/atom+xml",
        )

    @pages.get("/archive/{day}", response_class=HTMLResponse)
    async def archive_day(request: Request, day: date) -> HTMLResponse:
        papers = await run_in_threadpool(store.day_papers, day)
        if not papers:
            return not_found(request)
        ranked = await run_in_threadpool(site.newsletter.day_papers, day)
        return site.page(
            request,
            "archive_day.html.j2",
            day_text=day_label(day),
            papers=[paper_view(Pick(p, ())) for p in ranked],
        )

    @pages.get("/healthz")
    async def healthz() -> JSONResponse:
        # Healthy means the database answers: a web process without it can serve nothing.
        try:
            await run_in_threadpool(store.listed_days)
        except NewsletterError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @pages.get("/metrics")
    async def metrics() -> Response:
        snapshot = await run_in_threadpool(store.metrics)
        return Response(render_metrics(snapshot), media_type="text/plain; version=0.0.4")

    def not_found(request: Request) -> HTMLResponse:
        return site.notice(
            request,
            "Link not found",
            "This link is not valid. It may have been mistyped or cut short by your mail program.",
            status_code=404,
            extra_link={"url": links.home(), "label": "Go to the home page"},
        )

    app.include_router(pages)
