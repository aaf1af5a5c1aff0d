"""The web app: middleware, the lifespan, and the routes table mounted on a FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

import newsletter.web.errors as errors
import newsletter.web.routes as routes
from newsletter.config import Settings, load_settings
from newsletter.root import Newsletter
from newsletter.web.security import SECURITY_HEADERS
from newsletter.web.site import Site, WebNewsletter


def create_app(
    settings: Settings | None = None,
    *,
    demo: bool = False,
    newsletter: WebNewsletter | None = None,
) -> FastAPI:
    """The app; pass `newsletter` to share one (and its database pool) with a worker."""
    served: WebNewsletter = newsletter or Newsletter(settings or load_settings(), demo=demo)
    site = Site(served)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await site.mailer.drain()
        served.close()

    app = FastAPI(
        title=f"{served.settings.newsletter_name} API",
        lifespan=lifespan,
        # No interactive docs page: Swagger UI loads its script from a CDN. The OpenAPI
        # document is served; any viewer can open it.
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        # Starlette's slash redirect builds an absolute URL from the Host header; errors.py
        # answers with a relative one instead.
        redirect_slashes=False,
    )
    errors.install(app)
    app.state.site = site

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    routes.register(app)
    return app
