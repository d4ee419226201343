"""Work that stops when its HTTP client goes away, so the inputs it queued never run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")


class Disconnected(Exception):
    """The client went away before its answer was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    # Once the body is read, the server's next message is the disconnect: sent when the client
    # goes, or after the response (uvicorn, Mangum).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` (after the body was read); cancel it and raise ``Disconnected`` if the client
    disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise Disconnected
    return task.result()
