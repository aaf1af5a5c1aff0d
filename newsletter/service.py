"""`newsletter run`: the web app, the daily scheduler and a sender worker in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from newsletter.config import Settings
from newsletter.root import Newsletter
from newsletter.scheduler import build_scheduler, catch_up
from newsletter.web import create_app
from newsletter.worker import run_worker

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: on SIGTERM it would re-raise the signal after
    shutting down, killing the worker mid-batch. run_service handles the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    newsletter = Newsletter(settings)
    server = _Server(
        uvicorn.Config(
            create_app(newsletter=newsletter),
            host=host or settings.web_host,
            port=port or settings.web_port,
            log_config=None,
            proxy_headers=False,
            server_header=False,
        )
    )
    stop = asyncio.Event()

    def shut_down() -> None:
        log.info("stopping: finishing the current batch")
        stop.set()
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, shut_down)
    scheduler = build_scheduler(newsletter)
    scheduler.start()
    log.info("scheduler started: daily run at %s UTC", settings.schedule_time)
    try:
        await catch_up(newsletter)
        worker = asyncio.create_task(run_worker(newsletter, burst=False, stop=stop))
        await server.serve()
        stop.set()
        await worker
    finally:
        scheduler.shutdown(wait=False)  # the app's lifespan already closed the newsletter
