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
from newsletter.states import Cadence, SubscriberStatus
from newsletter.subscriptions import Schedule, split_keywords
from newsletter.web.security import client_ip
from newsletter.web.site import Site, SiteDep


class SubscribeRequest(BaseModel):
    email: str = Field(max_length=254)
    topics: list[str] = Field(default_factory=list, max_length=50)
    keywords: list[str] = Field(default_factory=list, max_length=50)


class Accepted(BaseModel):
    status: Literal["check_your_inbox"] = "check_your_inbox"


class ConfirmRequest(BaseModel):
    token: str = Field(max_length=200)


class Preferences(BaseModel):
    email: str
    status: SubscriberStatus
    topics: list[str]
    keywords: list[str]
    frequency: Cadence
    timezone: str | None = Field(None, description="IANA zone; unset = the operator's default")
    delivery_hour: int | None = Field(None, ge=0, le=23)
    weekday: int | None = Field(None, ge=0, le=6, description="Weekly digests: 0 = Monday")


class PreferencesUpdate(BaseModel):
    topics: list[str] = Field(default_factory=list, max_length=50)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    frequency: Cadence = Cadence.DAILY
    paused: bool = False
    timezone: str | None = Field(None, max_length=64)
    delivery_hour: int | None = Field(None, ge=0, le=23)
    weekday: int | None = Field(None, ge=0, le=6)


def _preferences(record: SubscriberRecord) -> Preferences:
    return Preferences(
        email=record.email,
        status=record.status,
        topics=list(record.topics),
        keywords=list(record.keywords),
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
            body.email, body.topics, split_keywords(body.keywords)
        )
    except (InvalidAddress, ConfigError) as exc:
        raise HTTPException(422, str(exc)) from None
    site.sign_up_later(checked)
    return Accepted()


async def confirm(body: ConfirmRequest, site: SiteDep) -> Preferences:
    record = await run_in_threadpool(site.subscriptions.confirm, body.token)
    if record is None:
        raise HTTPException(400, "the confirmation token is invalid or expired")
    return _preferences(record)


async def get_preferences(subscriber_id: int, token: str, site: SiteDep) -> Preferences:
    return _preferences(await _signed(site, "preferences", subscriber_id, token))


async def put_preferences(
    subscriber_id: int, token: str, body: PreferencesUpdate, site: SiteDep
) -> Preferences:
    await _signed(site, "preferences", subscriber_id, token)
    try:
        record = await run_in_threadpool(
            site.subscriptions.save_preferences,
            subscriber_id,
            body.topics,
            split_keywords(body.keywords),
            body.frequency,
            body.paused,
            Schedule.parse(body.timezone, body.delivery_hour, body.weekday),
        )
    except (ConfigError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    if record is None:
        raise HTTPException(404, NOT_FOUND)
    return _preferences(record)


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
    return _preferences(record)
