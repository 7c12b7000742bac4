"""flows.character.both: two branches at once; a failure cancels the other and is raised as itself."""

from __future__ import annotations

import asyncio

import pytest

from flows.character import both


async def test_both_returns_both_results() -> None:
    async def later(value: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return value

    assert await both(later(1, 0.05), later(2, 0.01)) == (1, 2)


async def test_a_failure_cancels_the_other_branch_and_is_raised_itself() -> None:
    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("voice: too short")

    with pytest.raises(ValueError, match="voice: too short"):
        await asyncio.wait_for(both(slow(), fails()), 5)
    assert cancelled.is_set()


async def test_cancelling_the_caller_cancels_both_branches() -> None:
    stopped: list[str] = []

    async def branch(name: str) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append(name)
            raise

    caller = asyncio.ensure_future(both(branch("images"), branch("voice")))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(stopped) == ["images", "voice"]
