"""Several requests at once in a task group, and what comes out when one of them fails.

A task group raises an ExceptionGroup; the layers above want one exception with one
meaning. The first failure stops the others (no point finishing a batch that failed), and
the group is unwrapped: a run-stopping error (a BulkgeneError: bad key, outage,
unreachable host) before a failed request (GaveUp: the batch failed). Anything else is a
bug and stays the whole group, traceback and all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from bulkgene.errors import BulkgeneError
from bulkgene.net.exchange import GaveUp

T = TypeVar("T")


async def gather(fetches: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Await ``fetches`` together; their results in order, or the one failure that matters."""
    if len(fetches) == 1:
        return [await fetches[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(fetch) for fetch in fetches]
    except BaseExceptionGroup as failed:
        raise _the_failure(failed) from None
    return [task.result() for task in tasks]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _the_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves = list(_leaves(group))
    for kind in (BulkgeneError, GaveUp):
        if failure := next((exc for exc in leaves if isinstance(exc, kind)), None):
            return failure
    return group
