"""Waiting out work a cancel can't stop (threads, tasks still winding down) before it goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def outlast(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Return once every one of ``futures`` is done, however often this is cancelled
    meanwhile (the caller re-raises its own cancel afterwards): what they leave on disk or
    hold must be known before the cleanup that follows a cancel."""
    pending = set(futures)
    while pending := {future for future in pending if not future.done()}:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pending)
