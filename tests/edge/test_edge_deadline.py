"""A one-shot fragment's deadline (the federation's device timeout): the edge stops it itself."""
import asyncio
import threading
import time

ENDLESS = "select count(iota(1, 1000000000000));"


async def test_a_fragment_past_its_deadline_is_stopped_by_the_edge_without_a_cancel(fed, edge_config, start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    threads = threading.active_count()
    qid = await conn.start_query(ENDLESS, kind="bag", deadline_s=0.5)
    end = await conn.next("end", qid=qid, start=0, timeout=10)
    assert end["outcome"] == "cancelled" and end["error"]["kind"] == "DeadlineError"
    assert "0.5 s" in end["error"]["message"]
    assert 0.4 < end["seconds"] < 5.0
    assert daemon.fragments.past_deadline == 1
    assert qid not in daemon.fragments.qids()
    # its worker thread stops too (not just the answer): the CPU is given back
    waited = time.monotonic()
    while threading.active_count() > threads and time.monotonic() - waited < 10:
        await asyncio.sleep(0.05)
    assert threading.active_count() <= threads
    rows, end = await conn.run_query("select 1 + 1;")
    assert rows == [2] and end["outcome"] == "ok"


async def test_a_time_limit_shorter_than_the_deadline_still_ends_it_as_a_limit(fed, edge_config, start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qid = await conn.start_query(ENDLESS, kind="bag", deadline_s=30, limits={"seconds": 0.5})
    end = await conn.next("end", qid=qid, start=0, timeout=10)
    assert end["outcome"] == "limit" and "time limit" in end["error"]["message"]
    assert daemon.fragments.past_deadline == 0


async def test_a_fragment_that_answers_before_its_deadline_is_not_touched(fed, edge_config, start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    rows, end = await conn.run_query("select count(iota(1, 1000));", kind="bag", deadline_s=5)
    assert rows == [1000] and end["outcome"] == "ok"
    await asyncio.sleep(0.1)
    assert daemon.fragments.past_deadline == 0
