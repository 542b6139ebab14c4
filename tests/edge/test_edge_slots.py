"""An edge's query slots when every one is taken (edge_engine/fragments.py `_yield_paused_slot`):
a principal under its share takes the slot of the oldest stream paused (unread) for
PAUSED_YIELD_S of the principal holding the most; nothing else is ever taken."""
from __future__ import annotations

import asyncio

import pytest

from edge_engine import fragments as fragments_module

STREAM = "select stream of x from Real x where x in signal_stream('vibration');"
COUNT = "select count(x) from Integer x where x in iota(1, 1000) and x % 7 = 3;"
FULL = "this edge runs at most 4 queries at once"


@pytest.fixture
def quick_yield(monkeypatch):
    monkeypatch.setattr(fragments_module, "PAUSED_YIELD_S", 0.3)


async def paused_streams(conn, daemon, principal: str, n: int, credit: int = 8) -> list[str]:
    """n streams of `principal` that used their credit and now wait for more (nobody reads)."""
    qids = [await conn.start_query(STREAM, credit=credit, batch_rows=credit, principal=principal)
            for _ in range(n)]
    for qid in qids:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    deadline = asyncio.get_running_loop().time() + 10
    while daemon.fragments.paused() < n and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert daemon.fragments.paused() == n
    return qids


def count_answer() -> list:
    return [len(range(3, 1001, 7))]      # the oracle: Python's own count


async def test_a_principal_under_its_share_takes_the_oldest_paused_stream_of_the_biggest_holder(
        fed, edge_config, start_edge, quick_yield):
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    hog = await paused_streams(conn, daemon, "hog", 4)
    await asyncio.sleep(0.5)                         # paused past PAUSED_YIELD_S
    rows, end = await conn.run_query(COUNT, principal="reader")
    assert end["outcome"] == "ok" and rows == count_answer()
    yielded = await conn.next("end", qid=hog[0], start=0)       # the oldest of the hog's gave way
    assert yielded["outcome"] == "error" and yielded["error"]["kind"] == "LimitError"
    assert "unread" in yielded["error"]["message"] and "gave its slot" in yielded["error"]["message"]
    assert sorted(daemon.fragments.qids()) == sorted(hog[1:])   # the others go on
    assert daemon.fragments.yielded == 1


async def test_a_full_edge_with_no_paused_stream_refuses_as_before(fed, edge_config, start_edge, quick_yield):
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    read = [await conn.start_query(STREAM, principal="hog") for _ in range(4)]   # plenty of credit: read
    for qid in read:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    await asyncio.sleep(0.5)
    assert daemon.fragments.paused() == 0
    rows, end = await conn.run_query(COUNT, principal="reader")
    assert end["outcome"] == "error" and FULL in end["error"]["message"] and rows == []
    assert sorted(daemon.fragments.qids()) == sorted(read) and daemon.fragments.yielded == 0


async def test_a_stream_paused_only_briefly_keeps_its_slot(fed, edge_config, start_edge, monkeypatch):
    monkeypatch.setattr(fragments_module, "PAUSED_YIELD_S", 60.0)   # a reader that is merely slow
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    hog = await paused_streams(conn, daemon, "hog", 4)
    rows, end = await conn.run_query(COUNT, principal="reader")
    assert end["outcome"] == "error" and FULL in end["error"]["message"]
    assert sorted(daemon.fragments.qids()) == sorted(hog)


async def test_a_principal_at_its_share_takes_nothing(fed, edge_config, start_edge, quick_yield):
    # two principals, two paused streams each: the newcomer's principal already holds as many as
    # the biggest holder, so taking one would only move the imbalance — refused
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    hog = await paused_streams(conn, daemon, "hog", 2)
    mine = [await conn.start_query(STREAM, credit=8, batch_rows=8, principal="reader") for _ in range(2)]
    for qid in mine:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    await asyncio.sleep(0.5)
    rows, end = await conn.run_query(COUNT, principal="reader")
    assert end["outcome"] == "error" and FULL in end["error"]["message"]
    assert sorted(daemon.fragments.qids()) == sorted(hog + mine) and daemon.fragments.yielded == 0


async def test_the_biggest_holder_gives_way_not_a_smaller_one(fed, edge_config, start_edge, quick_yield):
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    small = await paused_streams(conn, daemon, "small", 1)
    big = [await conn.start_query(STREAM, credit=8, batch_rows=8, principal="big") for _ in range(3)]
    for qid in big:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    deadline = asyncio.get_running_loop().time() + 10
    while daemon.fragments.paused() < 4 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    rows, end = await conn.run_query(COUNT, principal="reader")
    assert end["outcome"] == "ok" and rows == count_answer()
    gone = await conn.next("end", qid=big[0], start=0)          # the big one's oldest, not small's older one
    assert gone["outcome"] == "error" and "gave its slot" in gone["error"]["message"]
    assert sorted(daemon.fragments.qids()) == sorted(small + big[1:])
