"""Helper processes of a multi-process `send`: they drain the outbox while the first plans it.

One Python process is bound to one core by the GIL, so a `send` on a machine with more cores
starts helpers that claim and send from the same outbox. This module is the process plumbing:
how a helper learns that planning ended, and how it dies with the process that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_plan_signal: tuple[Any, int] | None = None  # (the "planned" event, the planning process id)

PR_SET_PDEATHSIG = 1  # prctl(2): a signal for this process when its parent dies


def _start_helper(planned: Any, planner: int) -> None:
    """Runs first in each helper. The kernel is asked to end the helper when the planning
    process dies (kill -9, a SIGTERM from a supervisor): an orphan would keep sending, outside
    the SQLite sender lock its parent held, and keep its parent's output open. Its claims then
    expire and are sent by the next run, as after any crash."""
    global _plan_signal
    _plan_signal = (planned, planner)
    # The first process reports the run's outcome (a pause, a failure) once; without a handler
    # here Python's last-resort handler would print each helper's log records to stderr too.
    logging.getLogger("newsletter").addHandler(logging.NullHandler())
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere best effort
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != planner:  # it died before the request took effect
        os._exit(1)


def still_planning() -> bool:
    """In a helper: the planner has not said it is done, and is alive (a killed planner says
    nothing)."""
    assert _plan_signal is not None
    planned, planner = _plan_signal
    return not planned.is_set() and os.getppid() == planner


async def with_helpers(
    count: int,
    helper: Callable[..., T],
    args: tuple[Any, ...],
    plan: Callable[[], Any],
    work: Callable[[], Awaitable[Any]],
) -> tuple[Any, Any, list[T | BaseException]]:
    """Start `count` processes running `helper(*args)`, run `plan()` here, tell the helpers it
    ended (also when it failed: they send what is there), then run `work()` here too.

    Returns plan()'s result, work()'s result and each helper's result or exception.
    """
    context = multiprocessing.get_context("spawn")  # no inherited engine or event loop
    planned = context.Event()
    with ProcessPoolExecutor(
        count, mp_context=context, initializer=_start_helper, initargs=(planned, os.getpid())
    ) as pool:
        loop = asyncio.get_running_loop()
        others = [loop.run_in_executor(pool, helper, *args) for _ in range(count)]
        try:
            planned_result = plan()
        finally:
            planned.set()
        worked = await work()
        results = await asyncio.gather(*others, return_exceptions=True)
    return planned_result, worked, list(results)
