"""federation/loop_watch.py: what survived a full collection is frozen (so the next ones walk only
newer objects), everything is thawed periodically, cycles of dropped objects are still collected
after a thaw, and long collections and loop stalls are logged."""
from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
import weakref

from federation.loop_watch import watch_stalls
from streamql.gc_pauses import GcPauses


class Node:   # a cycle, as sockets and their protocols make
    def __init__(self):
        self.me = self


async def test_survivors_of_a_full_collection_are_frozen_then_thawed():
    loop = asyncio.get_running_loop()
    pauses = GcPauses(loop, freeze=True, thaw_every_s=3600).install()
    try:
        kept = [Node() for _ in range(100)]
        gc.collect()
        await asyncio.sleep(0)   # the freeze runs on the loop
        await asyncio.sleep(0)
        assert pauses.frozen == 1 and gc.get_freeze_count() >= len(kept)
        old = weakref.ref(kept[0])
        del kept
        gc.collect()   # a frozen cycle is out of the collector's sight
        assert old() is not None
        pauses.thaw_every_s = 0     # the periodic thaw: everything in sight again
        gc.collect()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert old() is None and pauses.collections >= 3
    finally:
        pauses.remove()
        gc.unfreeze()


async def test_long_collections_and_stalls_are_logged(caplog):
    pauses = GcPauses(slow_s=0.0).install()   # every collection is "long"
    watcher = asyncio.ensure_future(watch_stalls(stall_s=0.2, tick_s=0.05))
    try:
        with caplog.at_level(logging.WARNING, logger="streamql.federation"):
            gc.collect()
            await asyncio.sleep(0.1)
            time.sleep(0.4)   # the loop held
            await asyncio.sleep(0.2)
        messages = [r.getMessage() for r in caplog.records]
        assert any("garbage collection (generation 2" in m for m in messages), messages
        assert any("event loop was held" in m for m in messages), messages
        assert gc.get_freeze_count() == 0   # no freezing unless asked
    finally:
        watcher.cancel()
        pauses.remove()


def _spin_in_a_callback(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


async def test_a_stall_is_logged_with_where_the_loop_was_held_and_its_cpu(caplog):
    watcher = asyncio.ensure_future(watch_stalls(stall_s=0.2, tick_s=0.05))
    try:
        with caplog.at_level(logging.WARNING, logger="streamql.federation"):
            await asyncio.sleep(0.1)
            _spin_in_a_callback(0.6)   # the loop held by one long call
            await asyncio.sleep(0.2)
        held = [r.getMessage() for r in caplog.records if "event loop was held" in r.getMessage()]
        assert held, [r.getMessage() for r in caplog.records]
        assert "its thread ran" in held[0] and "_spin_in_a_callback" in held[0], held
    finally:
        watcher.cancel()


def test_a_long_collection_says_how_much_of_it_its_thread_was_on_a_cpu(caplog):
    """A collection whose thread was preempted (or starved of the CPU) is told from a slow one:
    here its thread sleeps through the 'collection', so it was on a CPU for none of it."""
    pauses = GcPauses(slow_s=0.1)
    with caplog.at_level(logging.WARNING, logger="streamql.federation"):
        pauses("start", {"generation": 2})
        time.sleep(0.3)
        pauses("stop", {"generation": 2, "collected": 7})
    [message] = [r.getMessage() for r in caplog.records if "garbage collection" in r.getMessage()]
    held = float(re.search(r"held the event loop ([\d.]+) s", message).group(1))
    on_cpu = float(re.search(r"its thread on a CPU ([\d.]+) s", message).group(1))
    assert held >= 0.3 and on_cpu < 0.1, message
