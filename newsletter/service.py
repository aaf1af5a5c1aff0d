"""`newsletter run`: the web app, the daily scheduler and a sender worker in one event loop."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from newsletter.config import Settings
from newsletter.pipeline import Newsletter
from newsletter.scheduler import build_scheduler, catch_up
from newsletter.web import create_app
from newsletter.worker import run_worker

log = logging.getLogger(__name__)


async def run_service(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    newsletter = Newsletter(settings)
    app = create_app(newsletter=newsletter)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or settings.web_host,
            port=port or settings.web_port,
            log_config=None,
            proxy_headers=False,
            server_header=False,
        )
    )
    scheduler = build_scheduler(newsletter)
    stop = asyncio.Event()
    scheduler.start()
    log.info("scheduler started: daily run at %s UTC", settings.schedule_time)
    try:
        await catch_up(newsletter)
        worker = asyncio.create_task(run_worker(newsletter, burst=False, stop=stop))
        # uvicorn handles SIGINT/SIGTERM and returns from serve(); the rest then stops too.
        await server.serve()
        stop.set()
        await worker
    finally:
        scheduler.shutdown(wait=False)  # the app's lifespan already closed the newsletter
