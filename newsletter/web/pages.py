"""The HTML pages: they work without JavaScript, and every form carries a CSRF token.

Every link on a page is built from the configured base URL; the Host header a request arrives
with is never used for one. Routes are registered in newsletter.web.routes.
"""

from __future__ import annotations

import hmac
import logging
import re
from datetime import date
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from newsletter.addresses import InvalidAddress
from newsletter.due_times import timezone_names
from newsletter.errors import ConfigError, NewsletterError
from newsletter.records import SubscriberRecord
from newsletter.relevance.profile import ABOUT_LIMIT
from newsletter.relevance.state import ReaderWords
from newsletter.render.digest import day_label
from newsletter.render.views import paper_view
from newsletter.selection import Pick
from newsletter.states import Cadence, SubscriberStatus
from newsletter.subscriptions import Schedule, split_keywords
from newsletter.web.archive import atom_feed
from newsletter.web.metrics import render_metrics
from newsletter.web.security import CSRF_FIELD, client_ip, csrf_valid
from newsletter.web.site import Site, SiteDep, form_data

log = logging.getLogger(__name__)
SAMPLE_SIZE = 5
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SESSION_EXPIRED = "Your session expired; please try again."
# New-style ("2606.00467") and old-style ("hep-th/9901001") arXiv ids; anything else names no
# paper, and is answered before the database is asked.
_PAPER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,30}(?:/[0-9]{7})?", re.ASCII)
FEEDBACK_KINDS = {"more": True, "less": False}

# -- subscribe and confirm ---------------------------------------------------------------------


async def home(request: Request, site: SiteDep) -> HTMLResponse:
    return await _home_page(site, request, {}, [])


async def _home_page(
    site: Site, request: Request, form: dict[str, Any], errors: list[str], status_code: int = 200
) -> HTMLResponse:
    days = await run_in_threadpool(site.store.papers.listed_days)
    sample, sample_date = [], None
    if days:
        sample_date = days[-1]
        ranked = await run_in_threadpool(site.ranked, sample_date)
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
            "about": form.get("about"),
            "exclude": form.get("exclude"),
        },
        about_limit=ABOUT_LIMIT,
        errors=errors,
        sample=sample,
        sample_date=sample_date,
        sample_day=day_label(sample_date) if sample_date else "",
    )


async def subscribe(request: Request, site: SiteDep) -> HTMLResponse:
    form = await form_data(request)
    if not csrf_valid(request, form.get(CSRF_FIELD)):
        return await _home_page(site, request, form, [SESSION_EXPIRED], 400)
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
            checked = site.subscriptions.sign_up_request(
                str(form.get("email", "")),
                form.get("topics", []),
                split_keywords(form.get("keywords")),
                str(form.get("about") or ""),
                split_keywords(form.get("exclude")),
            )
        except (InvalidAddress, ConfigError, ValueError) as exc:
            return await _home_page(site, request, form, [str(exc)], 400)
        site.sign_up_later(checked)
    return site.notice(
        request,
        "Check your inbox",
        "If the address can receive mail, a message is on its way. Open the link in it to "
        "confirm your subscription.",
        "Nothing arrives? Look in the spam folder, or try again in a few minutes.",
    )


async def confirm_page(request: Request, token: str, site: SiteDep) -> HTMLResponse:
    # A GET only shows the button: mail scanners follow links and must not confirm.
    if not site.subscriptions.confirmation_valid(token):
        return _expired_link(site, request)
    return site.notice(
        request,
        "Confirm your subscription",
        "One more click and the first digest arrives tomorrow morning.",
        action=f"{site.links.base_url}/confirm/{token}",
        button="Confirm my subscription",
    )


async def confirm(request: Request, token: str, site: SiteDep) -> Response:
    form = await form_data(request)
    if not csrf_valid(request, form.get(CSRF_FIELD)):
        return site.notice(
            request,
            "Please press the button again",
            "Your session expired.",
            status_code=400,
            action=f"{site.links.base_url}/confirm/{token}",
            button="Confirm my subscription",
        )
    record = await run_in_threadpool(site.subscriptions.confirm, token)
    if record is None:
        return _expired_link(site, request)
    welcome = site.links.preferences(record.id, record.token_salt) + "?welcome=1"
    return RedirectResponse(welcome, status_code=303)


# -- preferences, export, delete ---------------------------------------------------------------


async def preferences(
    request: Request, subscriber_id: int, token: str, site: SiteDep
) -> HTMLResponse:
    record = await site.signed("preferences", subscriber_id, token)
    if record is None:
        return _not_found(site, request)
    return await _preferences_page(
        site,
        request,
        record,
        saved=bool(request.query_params.get("saved")),
        welcome=bool(request.query_params.get("welcome")),
    )


async def save_preferences(
    request: Request, subscriber_id: int, token: str, site: SiteDep
) -> Response:
    checked = await _preferences_form(site, request, subscriber_id, token)
    if isinstance(checked, Response):
        return checked
    record, form = checked
    try:
        await run_in_threadpool(
            site.subscriptions.save_preferences,
            subscriber_id,
            form.get("topics", []),
            split_keywords(form.get("keywords")),
            str(form.get("frequency") or Cadence.DAILY),
            bool(form.get("paused")),
            Schedule.parse(form.get("timezone"), form.get("hour"), form.get("weekday")),
            site.subscriptions.words(
                str(form.get("about") or ""), split_keywords(form.get("exclude"))
            ),
        )
    except (ConfigError, ValueError) as exc:
        return await _preferences_page(site, request, record, errors=[str(exc)], status_code=400)
    saved = site.links.preferences(record.id, record.token_salt) + "?saved=1"
    return RedirectResponse(saved, status_code=303)


async def export(subscriber_id: int, token: str, site: SiteDep) -> Response:
    record = await site.signed("preferences", subscriber_id, token)
    data = await run_in_threadpool(site.subscriptions.export, subscriber_id) if record else None
    if data is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return JSONResponse(
        data, headers={"Content-Disposition": 'attachment; filename="my-newsletter-data.json"'}
    )


async def delete(request: Request, subscriber_id: int, token: str, site: SiteDep) -> HTMLResponse:
    checked = await _preferences_form(site, request, subscriber_id, token)
    if isinstance(checked, HTMLResponse):
        return checked
    await run_in_threadpool(site.subscriptions.delete, subscriber_id)
    return site.notice(
        request,
        "Your data is deleted",
        "Your address, preferences and delivery history are gone.",
        extra_link={"url": site.links.home(), "label": "Back to the home page"},
    )


async def _preferences_page(
    site: Site,
    request: Request,
    record: SubscriberRecord,
    saved: bool = False,
    welcome: bool = False,
    errors: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    links, settings = site.links, site.settings
    base = links.preferences(record.id, record.token_salt)
    subscriptions = site.subscriptions
    words = (await run_in_threadpool(subscriptions.words_of, [record.id])).get(
        record.id, ReaderWords()
    )
    feedback = await run_in_threadpool(subscriptions.feedback, record.id)
    return site.page(
        request,
        "preferences.html.j2",
        status_code,
        subscriber=record,
        topics=site.topics(),
        action=base,
        export_url=f"{base}/export",
        delete_url=f"{base}/delete",
        unsubscribe_url=links.unsubscribe(record.id, record.token_salt),
        weekdays=WEEKDAYS,
        timezones=timezone_names(),
        chosen_timezone=record.timezone or settings.default_timezone,
        chosen_hour=record.delivery_hour
        if record.delivery_hour is not None
        else settings.default_delivery_hour,
        chosen_weekday=record.weekday if record.weekday is not None else settings.weekly_weekday,
        saved=saved,
        welcome=welcome,
        errors=errors or [],
        about=words.about,
        exclude=", ".join(words.exclude),
        about_limit=ABOUT_LIMIT,
        liked=[f for f in feedback if f.liked],
        disliked=[f for f in feedback if not f.liked],
        undo_url=f"{base}/feedback/undo",
    )


async def _preferences_form(
    site: Site, request: Request, subscriber_id: int, token: str
) -> tuple[SubscriberRecord, dict[str, Any]] | HTMLResponse:
    """A form posted from the preferences page: its signed link and its CSRF token checked,
    or the page to answer with instead."""
    record = await site.signed("preferences", subscriber_id, token)
    if record is None:
        return _not_found(site, request)
    form = await form_data(request)
    if not csrf_valid(request, form.get(CSRF_FIELD)):
        return await _preferences_page(
            site, request, record, errors=[SESSION_EXPIRED], status_code=400
        )
    return record, form


# -- "more like this" and "less like this" ----------------------------------------------------


async def feedback_page(
    request: Request, subscriber_id: int, token: str, kind: str, paper_id: str, site: SiteDep
) -> HTMLResponse:
    # A GET only shows the button: mail scanners follow every link in a mail, and a signal
    # nobody gave would move the reader's profile.
    found = await _feedback_link(site, subscriber_id, token, kind, paper_id)
    if found is None:
        return _not_found(site, request)
    record, title = found
    liked = FEEDBACK_KINDS[kind]
    return site.notice(
        request,
        "More papers like this one?" if liked else "Fewer papers like this one?",
        f"\u201c{title}\u201d",
        "Your next digests lean towards papers like it."
        if liked
        else "Your next digests lean away from papers like it.",
        action=site.links.feedback(record.id, record.token_salt, paper_id, liked),
        button="More like this" if liked else "Less like this",
        button_class="" if liked else "secondary",
    )


async def feedback(
    request: Request, subscriber_id: int, token: str, kind: str, paper_id: str, site: SiteDep
) -> HTMLResponse:
    # Signed-link-only, like one-click unsubscribe: the URL's signature is the authorisation
    # (nobody else can make it), the action is the reader's own and undone in one click from
    # the preferences page, and a button pressed from a mail client's own browser, with no
    # cookie yet, still counts.
    found = await _feedback_link(site, subscriber_id, token, kind, paper_id)
    if found is None:
        return _not_found(site, request)
    record, title = found
    liked = FEEDBACK_KINDS[kind]
    paper = await run_in_threadpool(site.subscriptions.give_feedback, record.id, paper_id, liked)
    if paper is None:
        return _not_found(site, request)
    return site.notice(
        request,
        "Thanks, noted",
        f"More papers like \u201c{title}\u201d from now on."
        if liked
        else f"Fewer papers like \u201c{title}\u201d from now on.",
        extra_link={
            "url": site.links.preferences(record.id, record.token_salt),
            "label": "See or undo your feedback",
        },
    )


async def undo_feedback(
    request: Request, subscriber_id: int, token: str, site: SiteDep
) -> Response:
    checked = await _preferences_form(site, request, subscriber_id, token)
    if isinstance(checked, HTMLResponse):
        return checked
    record, form = checked
    paper_id = str(form.get("paper") or "")
    if _PAPER_ID.fullmatch(paper_id):
        await run_in_threadpool(site.subscriptions.undo_feedback, record.id, paper_id)
    saved = site.links.preferences(record.id, record.token_salt) + "?saved=1"
    return RedirectResponse(saved, status_code=303)


async def _feedback_link(
    site: Site, subscriber_id: int, token: str, kind: str, paper_id: str
) -> tuple[SubscriberRecord, str] | None:
    """The subscriber and the paper's title a feedback link names, if the link is genuine."""
    if kind not in FEEDBACK_KINDS or not _PAPER_ID.fullmatch(paper_id):
        return None
    record = await site.signed("feedback", subscriber_id, token)
    if record is None:
        return None
    papers = await run_in_threadpool(site.subscriptions.papers.by_id, [paper_id])
    paper = papers.get(paper_id)
    return (record, paper.title) if paper is not None else None


# -- unsubscribe and resubscribe ---------------------------------------------------------------


async def unsubscribe_page(
    request: Request, subscriber_id: int, token: str, site: SiteDep
) -> HTMLResponse:
    record = await site.signed("unsubscribe", subscriber_id, token)
    if record is None:
        return _not_found(site, request)
    if record.status == SubscriberStatus.UNSUBSCRIBED:
        return _unsubscribed_notice(site, request, record)
    return site.notice(
        request,
        "Unsubscribe?",
        f"{record.email} will get no more digests.",
        action=site.links.unsubscribe(record.id, record.token_salt),
        button="Unsubscribe",
    )


async def unsubscribe(
    request: Request, subscriber_id: int, token: str, site: SiteDep
) -> HTMLResponse:
    # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" with no cookie
    # and must get a 2xx without a redirect. The signed URL is the authorisation, so the
    # same handler serves the page's button.
    record = await site.signed("unsubscribe", subscriber_id, token)
    if record is None:
        return _not_found(site, request)
    await run_in_threadpool(site.subscriptions.unsubscribe, subscriber_id)
    return _unsubscribed_notice(site, request, record)


async def resubscribe(
    request: Request, subscriber_id: int, token: str, site: SiteDep
) -> HTMLResponse:
    record = await site.signed("unsubscribe", subscriber_id, token)
    form = await form_data(request)
    if record is None or not csrf_valid(request, form.get(CSRF_FIELD)):
        return _not_found(site, request)
    await run_in_threadpool(site.subscriptions.resubscribe, subscriber_id)
    return site.notice(
        request,
        "Welcome back",
        "Your digests start again tomorrow.",
        extra_link={
            "url": site.links.preferences(record.id, record.token_salt),
            "label": "Review your preferences",
        },
    )


def _unsubscribed_notice(site: Site, request: Request, record: SubscriberRecord) -> HTMLResponse:
    return site.notice(
        request,
        "You are unsubscribed",
        "No more digests will be sent to this address.",
        "Changed your mind?",
        action=site.links.resubscribe(record.id, record.token_salt),
        button="Resubscribe",
        button_class="secondary",
    )


# -- reading: the web version, the archive ----------------------------------------------------


async def web_version(
    request: Request, day: date, subscriber_id: int, token: str, site: SiteDep
) -> HTMLResponse:
    viewer = await run_in_threadpool(site.subscriptions.viewer, subscriber_id, day, token)
    if viewer is None:
        return _not_found(site, request)
    html = await run_in_threadpool(site.newsletter.web_version, subscriber_id, day)
    return HTMLResponse(html) if html is not None else _not_found(site, request)


async def archive(request: Request, site: SiteDep) -> HTMLResponse:
    days = await run_in_threadpool(site.store.papers.listed_days)
    return site.page(request, "archive.html.j2", days=list(reversed(days)), day_label=day_label)


async def archive_feed(site: SiteDep) -> Response:
    days = await run_in_threadpool(site.store.papers.listed_days)
    recent = list(reversed(days))[:30]
    papers = {d: await run_in_threadpool(site.ranked, d) for d in recent}
    return Response(
        atom_feed(site.settings.newsletter_name, site.links, papers),
        media_type="application/atom+xml",
    )


async def archive_day(request: Request, day: date, site: SiteDep) -> HTMLResponse:
    ranked = await run_in_threadpool(site.ranked, day)
    if not ranked:
        return _not_found(site, request)
    return site.page(
        request,
        "archive_day.html.j2",
        day_text=day_label(day),
        papers=[paper_view(Pick(p, ())) for p in ranked],
    )


# -- operations -------------------------------------------------------------------------------


async def healthz(site: SiteDep) -> JSONResponse:
    # Healthy means the database answers: a web process without it can serve nothing. What
    # failed goes to the log, not to whoever asks.
    try:
        await run_in_threadpool(site.store.papers.listed_days)
    except NewsletterError as exc:
        log.error("health check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request, site: SiteDep) -> Response:
    # Delivery counts are the operator's: only a scraper with the token sees them, and
    # without a token configured the endpoint does not exist.
    expected = site.settings.metrics_token
    if expected is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    offered = request.headers.get("authorization", "")
    wanted = f"Bearer {expected.get_secret_value()}"
    if not hmac.compare_digest(offered.encode(), wanted.encode()):
        return JSONResponse(
            {"detail": "a bearer token is needed"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    snapshot = await run_in_threadpool(site.store.reports.metrics)
    return Response(render_metrics(snapshot), media_type="text/plain; version=0.0.4")


# -- answers shared by several pages ----------------------------------------------------------


def _not_found(site: Site, request: Request) -> HTMLResponse:
    return site.notice(
        request,
        "Link not found",
        "This link is not valid. It may have been mistyped or cut short by your mail program.",
        status_code=404,
        extra_link={"url": site.links.home(), "label": "Go to the home page"},
    )


def _expired_link(site: Site, request: Request) -> HTMLResponse:
    return site.notice(
        request,
        "This link has expired",
        "Confirmation links work for a limited time. Subscribe again to get a fresh one.",
        status_code=400,
        extra_link={"url": site.links.home(), "label": "Subscribe again"},
    )
