"""MemoryBudget on plain asyncio: waits for room, serves in order, never deadlocks on a big batch."""

from __future__ import annotations

import asyncio

import pytest

from bulkgene.run.memory import MemoryBudget


async def settle() -> None:
    """Let every ready task run until none is left runnable (no sleeps, no clock)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_reserve_within_the_limit_does_not_wait() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(60)
    await budget.reserve(40)
    assert budget.held_bytes == 100 and budget.peak_bytes == 100


async def test_a_reservation_past_the_limit_waits_for_a_release() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(70)
    waiting = asyncio.create_task(budget.reserve(50))
    await settle()
    assert not waiting.done() and budget.held_bytes == 70
    budget.release(70)
    await settle()
    assert waiting.done() and budget.held_bytes == 50


async def test_a_batch_larger_than_the_budget_goes_through_alone() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(500)  # nothing held: it may pass the limit rather than wait forever
    assert budget.held_bytes == 500
    small = asyncio.create_task(budget.reserve(1))
    await settle()
    assert not small.done()
    budget.release(500)
    await settle()
    assert small.done() and budget.held_bytes == 1


async def test_waiters_are_served_in_order_so_a_big_one_is_not_starved() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(90)
    big = asyncio.create_task(budget.reserve(80))
    await settle()
    small = asyncio.create_task(budget.reserve(5))  # would fit now, but queues behind big
    await settle()
    assert not big.done() and not small.done()
    budget.release(90)
    await settle()
    assert big.done() and small.done() and budget.held_bytes == 85


async def test_resize_to_the_real_size_may_pass_the_limit_and_a_shrink_makes_room() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(50)
    budget.resize(50, 130)  # the data exists already: accounted, never waited for
    assert budget.held_bytes == 130
    waiting = asyncio.create_task(budget.reserve(20))
    await settle()
    assert not waiting.done()
    budget.resize(130, 10)
    await settle()
    assert waiting.done() and budget.held_bytes == 30 and budget.peak_bytes == 130


async def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_in() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(60)
    big = asyncio.create_task(budget.reserve(90))
    await settle()
    small = asyncio.create_task(budget.reserve(30))
    await settle()
    assert not small.done()
    big.cancel()
    await settle()
    assert big.cancelled() and small.done() and budget.held_bytes == 90


async def test_a_waiter_cancelled_as_it_is_granted_gives_the_bytes_back() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(100)
    waiting = asyncio.create_task(budget.reserve(40))
    await settle()
    budget.release(100)  # grants the waiter; its task has not resumed yet
    waiting.cancel()
    await settle()
    assert waiting.cancelled() and budget.held_bytes == 0


async def test_releasing_more_than_held_is_a_bug_caught_at_once() -> None:
    budget = MemoryBudget(100)
    await budget.reserve(10)
    with pytest.raises(ValueError, match="only 10 are held"):
        budget.release(11)
