"""The work queue: a bounded number of actions at once, and a key waiting for its turn is queued once."""

from __future__ import annotations

import asyncio

from credward.operator.requeue import Key, Requeue


async def test_a_burst_runs_a_bounded_number_at_once_and_each_waiting_key_once() -> None:
    running = 0
    peak = 0
    runs: list[Key] = []
    release = asyncio.Event()

    async def action(key: Key) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        runs.append(key)
        await release.wait()
        running -= 1

    queue = Requeue(action, max_running=3)
    keys = [("ns", f"k{i}") for i in range(10)]
    for key in keys:
        queue.after(key, 0)
    await asyncio.sleep(0.05)
    for key in keys:
        queue.after(key, 0)  # again while waiting for a slot: no second run
    await asyncio.sleep(0.05)
    assert running == 3
    assert queue.waiting() == 10  # seven never started, three asked again while running
    release.set()
    for _ in range(100):
        if len(runs) == 13 and running == 0:
            break
        await asyncio.sleep(0.01)
    assert peak == 3
    assert len(runs) == 10 + 3  # the three running at the second burst run once more; the waiting ones do not
    queue.close()


async def test_nothing_starts_before_the_gate_opens() -> None:
    runs: list[Key] = []

    async def action(key: Key) -> None:
        runs.append(key)

    gate = asyncio.Event()
    queue = Requeue(action)
    queue.hold_until(gate)
    queue.after(("ns", "a"), 0)
    queue.after(("ns", "b"), 0)
    await asyncio.sleep(0.02)
    assert runs == []
    assert queue.waiting() == 2
    gate.set()
    for _ in range(100):
        if len(runs) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(runs) == [("ns", "a"), ("ns", "b")]
    queue.close()
