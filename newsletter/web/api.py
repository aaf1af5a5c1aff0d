"""The JSON API: the same actions as the pages, for scripts and other front ends.

OpenAPI docs are served at /api/docs. It uses no cookies, so there is nothing for CSRF to ride
on; the signed ids in the paths are the authorisation, as in the mail links.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from newsletter.addresses import InvalidAddress
from newsletter.errors import ConfigError
from newsletter.store import SubscriberRecord
from newsletter.web.security import client_ip
from newsletter.web.subscriptions import Schedule, split_keywords

if TYPE_CHECKING:
    from newsletter.web.app import Site


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
    status: str
    topics: list[str]
    keywords: list[str]
    frequency: Literal["daily", "weekly"]
    timezone: str | None = Field(None, description="IANA zone; unset = the operator's default")
    delivery_hour: int | None = Field(None, ge=0, le=23)
    weekday: int | None = Field(None, ge=0, le=6, description="Weekly digests: 0 = Monday")


class PreferencesUpdate(BaseModel):
    topics: list[str] = Field(default_factory=list, max_length=50)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    frequency: Literal["daily", "weekly"] = "daily"
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
        frequency="weekly" if record.frequency == "weekly" else "daily",
        timezone=record.timezone,
        delivery_hour=record.delivery_hour,
        weekday=record.weekday,
    )


def router(site: Site) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["subscriptions"])
    subscriptions = site.subscriptions
    store = site.newsletter.store

    async def signed(purpose: str, subscriber_id: int, token: str) -> SubscriberRecord:
        record = await run_in_threadpool(subscriptions.signed, purpose, subscriber_id, token)
        if record is None:
            raise HTTPException(404, "unknown or invalid link")
        return record

    @api.post("/subscribe", status_code=202, response_model=Accepted)
    async def subscribe(body: SubscribeRequest, request: Request) -> Accepted:
        """Start a double opt-in. The answer is the same for new and known addresses."""
        if not site.signups.allow(client_ip(request, site.settings.trusted_proxy_hops)):
            raise HTTPException(429, "too many sign-ups from this address; try again later")
        try:
            result = await run_in_threadpool(
                subscriptions.sign_up, body.email, body.topics, split_keywords(body.keywords)
            )
        except (InvalidAddress, ConfigError) as exc:
            raise HTTPException(422, str(exc)) from None
        site.send_signup_mail(result.subscriber_id, result.mail)
        return Accepted()

    @api.post("/confirm", response_model=Preferences)
    async def confirm(body: ConfirmRequest) -> Preferences:
        record = await run_in_threadpool(subscriptions.confirm, body.token)
        if record is None:
            raise HTTPException(400, "the confirmation token is invalid or expired")
        return _preferences(record)

    @api.get("/preferences/{subscriber_id}/{token}", response_model=Preferences)
    async def get_preferences(subscriber_id: int, token: str) -> Preferences:
        return _preferences(await signed("preferences", subscriber_id, token))

    @api.put("/preferences/{subscriber_id}/{token}", response_model=Preferences)
    async def put_preferences(
        subscriber_id: int, token: str, body: PreferencesUpdate
    ) -> Preferences:
        await signed("preferences", subscriber_id, token)
        try:
            record = await run_in_threadpool(
                subscriptions.save_preferences,
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
            raise HTTPException(404, "unknown or invalid link")
        return _preferences(record)

    @api.get("/preferences/{subscriber_id}/{token}/export")
    async def export(subscriber_id: int, token: str) -> dict[str, Any]:
        await signed("preferences", subscriber_id, token)
        data = await run_in_threadpool(store.export_subscriber, subscriber_id)
        if data is None:
            raise HTTPException(404, "unknown or invalid link")
        return data

    @api.delete("/preferences/{subscriber_id}/{token}", status_code=204)
    async def delete(subscriber_id: int, token: str) -> None:
        await signed("preferences", subscriber_id, token)
        await run_in_threadpool(store.delete_subscriber_by_id, subscriber_id)

    @api.post("/unsubscribe/{subscriber_id}/{token}", response_model=Preferences)
    async def unsubscribe(subscriber_id: int, token: str) -> Preferences:
        await signed("unsubscribe", subscriber_id, token)
        record = await run_in_threadpool(store.unsubscribe, subscriber_id)
        if record is None:
            raise HTTPException(404, "unknown or invalid link")
        return _preferences(record)

    return api
