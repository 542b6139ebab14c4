"""An edge's query slots when every one is taken (edge_engine/fragments.py `_yield_paused_slot`):
a principal under its share takes the slot of the oldest stream paused (unread) for
PAUSED_YIELD_S of a principal holding at least as many as it then would; nothing else is ever
taken. Beyond the slots, a reserve only for fragments sent as one-shot (`kind`)."""
from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from edge_engine import fragments as fragments_module

STREAM = "select stream of x from Real x where x in signal_stream('vibration');"
COUNT = "select count(x) from Integer x where x in iota(1, 1000) and x % 7 = 3;"
LONG = "select count(iota(1, 1000000000000));"      # a one-shot query that runs until stopped
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
    assert "retry_s" not in yielded["error"]       # given way for being unread: not to be asked again
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
    assert end["error"]["retry_s"] == fragments_module.BUSY_RETRY_S     # busy, not wrong: ask again
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


async def test_a_newcomer_holding_nothing_takes_a_stream_unread_for_seconds_when_each_holds_one(
        fed, edge_config, start_edge, quick_yield):
    # a fleet of many users: every principal holds one slot, so max-min with "less one" never fired;
    # a newcomer with nothing here takes the oldest unread stream's slot (it then holds no more)
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    held = await paused_streams(conn, daemon, "user0", 1)
    read = [await conn.start_query(STREAM, principal=f"reader{i}") for i in range(3)]   # plenty of credit: read
    for qid in read:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    await asyncio.sleep(0.5)
    rows, end = await conn.run_query(COUNT, principal="newcomer")
    assert end["outcome"] == "ok" and rows == count_answer()
    gone = await conn.next("end", qid=held[0], start=0)             # the unread one, not a read one
    assert gone["outcome"] == "error" and "gave its slot" in gone["error"]["message"]
    assert sorted(daemon.fragments.qids()) == sorted(read) and daemon.fragments.yielded == 1


async def test_a_one_shot_query_runs_on_an_edge_full_of_streams_being_read(fed, edge_config, start_edge):
    # nothing paused, nothing to take: the reserve beyond the 4 slots takes the one-shot query
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    read = [await conn.start_query(STREAM, principal=f"reader{i}") for i in range(4)]
    for qid in read:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    rows, end = await conn.run_query(COUNT, principal="newcomer", kind="bag")
    assert end["outcome"] == "ok" and rows == count_answer()
    rows, end = await conn.run_query(STREAM, principal="newcomer", kind="stream")   # a stream: no reserve
    assert end["outcome"] == "error" and FULL in end["error"]["message"]
    rows, end = await conn.run_query(COUNT, principal="newcomer")   # not said one-shot: as before
    assert end["outcome"] == "error" and FULL in end["error"]["message"]
    assert sorted(daemon.fragments.qids()) == sorted(read) and daemon.fragments.yielded == 0


async def test_the_one_shot_reserve_is_bounded_and_takes_no_stream(fed, edge_config, start_edge):
    config = edge_config()
    daemon = await start_edge(dataclasses.replace(config, limits=dataclasses.replace(config.limits, one_shot_reserve=2)),
                              max_fragments=4)
    conn = await fed.connection("wl-1")
    read = [await conn.start_query(STREAM, principal=f"reader{i}") for i in range(4)]
    for qid in read:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    long = [await conn.start_query(LONG, principal=f"counter{i}", kind="bag", limits={"seconds": 30}) for i in range(2)]
    await asyncio.sleep(0.2)
    assert sorted(daemon.fragments.qids()) == sorted(read + long)
    rows, end = await conn.run_query(COUNT, principal="newcomer", kind="bag")
    assert end["outcome"] == "error" and "at most 6 queries at once (2 of them kept for one-shot" in end["error"]["message"]
    assert end["error"]["retry_s"] == fragments_module.BUSY_RETRY_S
    assert daemon.fragments.refused_full == 1 and daemon.fragments.refused_one_shot == 1
    # a stream sent as one-shot is refused when it compiles, whatever slot it took
    for qid in long:
        await conn.send("cancel", qid=qid)
    await conn.wait_for(lambda f: f.t == "end" and f["qid"] == long[-1])
    rows, end = await conn.run_query(STREAM, principal="liar", kind="bag")
    assert end["outcome"] == "limit" and "sent as a one-shot query but is a stream" in end["error"]["message"]


async def test_a_full_edge_tells_what_fills_its_slots(fed, edge_config, start_edge, caplog, monkeypatch):
    monkeypatch.setattr(fragments_module, "PAUSED_YIELD_S", 60.0)   # nothing given way: the census is logged
    daemon = await start_edge(edge_config(), max_fragments=4)
    conn = await fed.connection("wl-1")
    held = await paused_streams(conn, daemon, "hog", 2)
    read = [await conn.start_query(STREAM, principal=f"reader{i}", kind="stream") for i in range(2)]
    for qid in read:
        await conn.wait_for(lambda f, qid=qid: f.t == "rows" and f["qid"] == qid)
    census = daemon.fragments.census()
    assert census["running"] == 4 and census["principals"] == 3 and census["most_per_principal"] == 2
    assert census["kinds"] == {"stream": 4} and census["states"].get("paused") == 2 and len(census["paused_s"]) == 2
    assert sorted(f[0] for f in census["fragments"]) == ["hog", "hog", "reader0", "reader1"]
    with caplog.at_level(logging.WARNING):
        rows, end = await conn.run_query(STREAM, principal="newcomer", kind="stream")
    assert end["outcome"] == "error" and FULL in end["error"]["message"]
    logged = [r.getMessage() for r in caplog.records if "slots full" in r.getMessage()]
    assert len(logged) == 1 and "refused newcomer" in logged[0] and '"running": 4' in logged[0]
    assert "1 refused since the start (0 one-shot)" in logged[0]
    assert sorted(daemon.fragments.qids()) == sorted(held + read)
