"""Every URL the app answers, in one table: pages for people, then the JSON API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse

import newsletter.web.api as api
import newsletter.web.pages as pages
from newsletter.web.errors import StrictJSONRoute

PREFERENCES = "/preferences/{subscriber_id}/{token}"
# The kind before the paper: an old-style arXiv id ("hep-th/9901001") holds a slash.
FEEDBACK = "/feedback/{subscriber_id}/{token}/{kind}/{paper_id:path}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    endpoint: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)


HTML: dict[str, Any] = {"response_class": HTMLResponse}
RAW: dict[str, Any] = {"response_model": None}  # the handler returns a Response of its own

PAGES = (
    Route("GET", "/", pages.home, HTML),
    Route("POST", "/subscribe", pages.subscribe, HTML),
    Route("GET", "/confirm/{token}", pages.confirm_page, HTML),
    Route("POST", "/confirm/{token}", pages.confirm, RAW),
    Route("GET", PREFERENCES, pages.preferences, HTML),
    Route("POST", PREFERENCES, pages.save_preferences, RAW),
    Route("GET", f"{PREFERENCES}/export", pages.export, RAW),
    Route("POST", f"{PREFERENCES}/delete", pages.delete, HTML),
    Route("POST", f"{PREFERENCES}/feedback/undo", pages.undo_feedback, RAW),
    Route("GET", FEEDBACK, pages.feedback_page, HTML),
    Route("POST", FEEDBACK, pages.feedback, HTML),
    Route("GET", "/unsubscribe/{subscriber_id}/{token}", pages.unsubscribe_page, HTML),
    Route("POST", "/unsubscribe/{subscriber_id}/{token}", pages.unsubscribe, HTML),
    Route("POST", "/resubscribe/{subscriber_id}/{token}", pages.resubscribe, HTML),
    Route("GET", "/digest/{day}/{subscriber_id}/{token}", pages.web_version, HTML),
    Route("GET", "/archive", pages.archive, HTML),
    Route("GET", "/archive.atom", pages.archive_feed, RAW),
    Route("GET", "/archive/{day}", pages.archive_day, HTML),
    Route("GET", "/healthz", pages.healthz, RAW),
    Route("GET", "/metrics", pages.metrics, RAW),
)

API = (
    Route(
        "POST", "/subscribe", api.subscribe, {"status_code": 202, "response_model": api.Accepted}
    ),
    Route("POST", "/confirm", api.confirm, {"response_model": api.Preferences}),
    Route("GET", PREFERENCES, api.get_preferences, {"response_model": api.Preferences}),
    Route("PUT", PREFERENCES, api.put_preferences, {"response_model": api.Preferences}),
    Route("GET", f"{PREFERENCES}/export", api.export),
    Route("DELETE", PREFERENCES, api.delete, {"status_code": 204}),
    Route(
        "POST",
        "/unsubscribe/{subscriber_id}/{token}",
        api.unsubscribe,
        {"response_model": api.Preferences},
    ),
)


def register(app: FastAPI) -> None:
    # The pages are for people; the OpenAPI docs describe the JSON API only.
    page_router = APIRouter(include_in_schema=False)
    api_router = APIRouter(prefix="/api", tags=["subscriptions"], route_class=StrictJSONRoute)
    for router, table in ((page_router, PAGES), (api_router, API)):
        for route in table:
            router.add_api_route(
                route.path, route.endpoint, methods=[route.method], **route.options
            )
        app.include_router(router)
