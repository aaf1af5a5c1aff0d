"""The JSON API: the same actions as the pages, for scripts and other front ends.

OpenAPI docs are served at /api/docs. It uses no cookies, so there is nothing for CSRF to ride
on; the signed ids in the paths are the authorisation, as in the mail links. Routes are
registered in newsletter.web.routes.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from newsletter.addresses import InvalidAddress
from newsletter.errors import ConfigError
from newsletter.records import SubscriberRecord
from newsletter.relevance.profile import ABOUT_LIMIT
from newsletter.relevance.state import ReaderWords
from newsletter.states import Cadence, SubscriberStatus
from newsletter.subscriptions import Schedule, split_keywords
from newsletter.web.security import client_ip
from newsletter.web.site import Site, SiteDep

# What a reader writes is checked by the subscription service (whitespace folded, then at most
# ABOUT_LIMIT characters); the schema only refuses what could never pass that check.
ABOUT_FIELD = Field(
    "", max_length=4 * ABOUT_LIMIT, description=f"What you work on; at most {ABOUT_LIMIT} chars"
)


class SubscribeRequest(BaseModel):
    email: str = Field(max_length=254)
    topics: list[str] = Field(default_factory=list, max_length=50)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    about: str = ABOUT_FIELD
    exclude: list[str] = Field(default_factory=list, max_length=50)


class Accepted(BaseModel):
    status: Literal["check_your_inbox"] = "check_your_inbox"


class ConfirmRequest(BaseModel):
    token: str = Field(max_length=200)


class Preferences(BaseModel):
    email: str
    status: SubscriberStatus
    topics: list[str]
    keywords: list[str]
    about: str = Field("", description="What they work on, in their own words")
    exclude: list[str] = Field(default_factory=list, description="Never shown papers about")
    frequency: Cadence
    timezone: str | None = Field(None, description="IANA zone; unset = the operator's default")
    delivery_hour: int | None = Field(None, ge=0, le=23)
    weekday: int | None = Field(None, ge=0, le=6, description="Weekly digests: 0 = Monday")


class PreferencesUpdate(BaseModel):
    topics: list[str] = Field(default_factory=list, max_length=50)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    about: str | None = Field(
        None, max_length=4 * ABOUT_LIMIT, description="Unset leaves it as it was"
    )
    exclude: list[str] | None = Field(None, max_length=50, description="Unset leaves them")
    frequency: Cadence = Cadence.DAILY
    paused: bool = False
    timezone: str | None = Field(None, max_length=64)
    delivery_hour: int | None = Field(None, ge=0, le=23)
    weekday: int | None = Field(None, ge=0, le=6)


async def _preferences(site: Site, record: SubscriberRecord) -> Preferences:
    found = await run_in_threadpool(site.subscriptions.words_of, [record.id])
    words = found.get(record.id, ReaderWords())
    return Preferences(
        email=record.email,
        status=record.status,
        topics=list(record.topics),
        keywords=list(record.keywords),
        about=words.about,
        exclude=list(words.exclude),
        frequency=record.frequency,
        timezone=record.timezone,
        delivery_hour=record.delivery_hour,
        weekday=record.weekday,
    )


NOT_FOUND = "unknown or invalid link"


async def _signed(site: Site, purpose: str, subscriber_id: int, token: str) -> SubscriberRecord:
    record = await site.signed(purpose, subscriber_id, token)
    if record is None:
        raise HTTPException(404, NOT_FOUND)
    return record


async def subscribe(body: SubscribeRequest, request: Request, site: SiteDep) -> Accepted:
    """Start a double opt-in. The answer is the same for new and known addresses."""
    if not site.signups.allow(client_ip(request, site.settings.trusted_proxy_hops)):
        raise HTTPException(429, "too many sign-ups from this address; try again later")
    try:
        checked = site.subscriptions.sign_up_request(
            body.email,
            body.topics,
            split_keywords(body.keywords),
            body.about,
            split_keywords(body.exclude),
        )
    except (InvalidAddress, ConfigError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    site.sign_up_later(checked)
    return Accepted()


async def confirm(body: ConfirmRequest, site: SiteDep) -> Preferences:
    record = await run_in_threadpool(site.subscriptions.confirm, body.token)
    if record is None:
        raise HTTPException(400, "the confirmation token is invalid or expired")
    return await _preferences(site, record)


async def get_preferences(subscriber_id: int, token: str, site: SiteDep) -> Preferences:
    return await _preferences(site, await _signed(site, "preferences", subscriber_id, token))


async def put_preferences(
    subscriber_id: int, token: str, body: PreferencesUpdate, site: SiteDep
) -> Preferences:
    current = await _signed(site, "preferences", subscriber_id, token)
    try:
        words = None
        if body.about is not None or body.exclude is not None:
            known = await run_in_threadpool(site.subscriptions.words_of, [current.id])
            was = known.get(current.id, ReaderWords())
            words = site.subscriptions.words(
                was.about if body.about is None else body.about,
                list(was.exclude) if body.exclude is None else split_keywords(body.exclude),
            )
        record = await run_in_threadpool(
            site.subscriptions.save_preferences,
            subscriber_id,
            body.topics,
            split_keywords(body.keywords),
            body.frequency,
            body.paused,
            Schedule.parse(body.timezone, body.delivery_hour, body.weekday),
            words,
        )
    except (ConfigError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    if record is None:
        raise HTTPException(404, NOT_FOUND)
    return await _preferences(site, record)


async def export(subscriber_id: int, token: str, site: SiteDep) -> dict[str, Any]:
    await _signed(site, "preferences", subscriber_id, token)
    data = await run_in_threadpool(site.subscriptions.export, subscriber_id)
    if data is None:
        raise HTTPException(404, NOT_FOUND)
    return data


async def delete(subscriber_id: int, token: str, site: SiteDep) -> None:
    await _signed(site, "preferences", subscriber_id, token)
    await run_in_threadpool(site.subscriptions.delete, subscriber_id)


async def unsubscribe(subscriber_id: int, token: str, site: SiteDep) -> Preferences:
    await _signed(site, "unsubscribe", subscriber_id, token)
    record = await run_in_threadpool(site.subscriptions.unsubscribe, subscriber_id)
    if record is None:
        raise HTTPException(404, NOT_FOUND)
    return await _preferences(site, record)
