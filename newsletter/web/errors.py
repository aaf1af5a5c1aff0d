"""How the app answers requests it cannot serve: bad input, unknown paths, a trailing slash.

No answer repeats what was sent (FastAPI's own validation answer echoes the input, which can be
a megabyte, or a NaN or lone surrogate its JSON encoder cannot write), and no answer carries a
URL built from the request's Host header.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

# The API's bodies are a few short strings; anything bigger is not one of them.
MAX_JSON_BODY = 16 * 1024


class StrictJSONRoute(APIRoute):
    """An API route whose JSON body must be strict JSON of a sane size: no NaN or Infinity,
    no lone surrogates (they cannot be stored or mailed), at most MAX_JSON_BODY bytes."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                problem = await _body_problem(request)
                if problem is not None:
                    status, message = problem
                    return JSONResponse({"detail": message}, status_code=status)
            response: Response = await handler(request)
            return response

        return checked


async def _body_problem(request: Request) -> tuple[int, str] | None:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_JSON_BODY:
        return 413, f"request body larger than {MAX_JSON_BODY} bytes"
    body = await request.body()
    if len(body) > MAX_JSON_BODY:
        return 413, f"request body larger than {MAX_JSON_BODY} bytes"
    if not body:
        return None
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return 400, "request body is not valid JSON"
    if not _encodable(value):
        return 400, "request body holds text that is not valid Unicode (a lone surrogate)"
    if _has_non_finite(value):
        return 400, "request body holds a number that is not finite"
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encodable(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)  # 1e999 parses as infinity
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def _field(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in location if p not in ("body", "path", "query")]
    return ".".join(parts)[:80] or "request"


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """Each problem as the field and what is wrong with it, never the value that was sent."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": _field(error.get("loc", ())), "problem": str(error.get("msg", "invalid"))[:200]}
        for error in exc.errors()[:10]
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_failed)

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and _slash_target(app, request) is not None:
            # Relative, so the Host header never becomes a URL.
            target = request.url.path.rstrip("/")
            if request.url.query:
                target += f"?{request.url.query}"
            return RedirectResponse(target, status_code=308)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(StarletteHTTPException, not_found)


def _slash_target(app: FastAPI, request: Request) -> str | None:
    """The path without its trailing slash, if the app answers that path."""
    path = request.url.path
    if len(path) < 2 or not path.endswith("/"):
        return None
    stripped = path.rstrip("/") or "/"
    scope = dict(request.scope, path=stripped)
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return stripped
    return None
