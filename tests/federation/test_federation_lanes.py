"""Statements share the worker threads fairly (federation/lanes.py): streams on a lane of their own,
one token at most a quarter of the statement workers, and a fast lane that keeps `select 1;` (any
statement that touches no edge) answered whatever holds the workers."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from federation.auth import Role, create_token
from federation.config import FederationConfig
from federation.errors import Busy
from federation.keys import REGISTRY
from federation.lanes import StatementPool, is_local, is_stream
from streamql.syntax import parse_one

pytestmark = pytest.mark.timeout(120)

SLOW = "select count(iota(1, 1000000000000));"        # runs until its time limit
UNREAD = "select stream of x from Real x where x in simstream(0.001);"


@pytest.fixture
def config(tmp_path) -> FederationConfig:
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, statement_workers=4)


def test_statements_are_told_apart():
    assert is_stream(parse_one(UNREAD)) and not is_stream(parse_one("select 1;"))
    assert is_local(parse_one("select 1;")) and is_local(parse_one(SLOW))
    assert not is_local(parse_one("select id(e) from Edge e;"))
    assert not is_local(parse_one("select count(iota(1, 10))@e from Edge e;"))


async def test_slots_per_principal_the_fast_lane_and_busy():
    pool = StatementPool(workers=4, wait_s=0.2)
    a = [await pool.acquire("a") for _ in range(1)]          # a quarter of 4: one
    with pytest.raises(Busy, match="already runs 1"):
        await pool.acquire("a")
    fast = await pool.acquire("a", local=True)               # a local statement: the fast lane
    assert fast.fast
    others = [await pool.acquire(who) for who in ("b", "c", "d")]
    with pytest.raises(Busy, match="all 4 statements workers are busy"):
        await pool.acquire("e")                             # not local: no fast lane
    assert (await pool.acquire("e", local=True)).fast
    streams = [await pool.acquire(f"s{i}", stream=True) for i in range(20)]   # a lane of their own
    assert all(s.lane is pool.streams for s in streams)
    waiting = asyncio.ensure_future(pool.acquire("b"))     # b waits for its own to end …
    await asyncio.sleep(0.05)
    others[0].release()
    assert (await waiting).lane is pool.statements          # … and gets it
    for slot in a + [fast] + others + streams:
        slot.release()
    pool.shutdown()


async def test_select_1_is_answered_while_slow_statements_and_unread_streams_hold_everything(client):
    registry = client.app[REGISTRY]
    tokens = [create_token(registry, Role.READ)[1] for _ in range(12)]

    def header(i: int) -> dict:
        return {"Authorization": f"Bearer {tokens[i]}"}

    # four tokens fill the 4 statement workers and one of them tries for more; eight hold streams
    slow = [asyncio.ensure_future(client.post("/v1/query", json={"query": SLOW, "limits": {"seconds": 8}},
                                              headers=header(i % 4))) for i in range(8)]
    streams = [await client.post("/v1/query", json={"query": UNREAD}, headers=header(4 + i)) for i in range(6)]
    assert all(s.status == 200 for s in streams)
    await asyncio.sleep(0.5)
    for _ in range(5):
        started = time.monotonic()
        resp = await client.post("/v1/query", json={"query": "select 1;"}, headers=header(11))
        lines = (await resp.text()).splitlines()
        assert resp.status == 200 and json.loads(lines[0]) == [1]
        assert time.monotonic() - started < 2.0
    for stream in streams:
        stream.close()
    done = await asyncio.gather(*slow)
    statuses = sorted(r.status for r in done)
    for resp in done:
        resp.close()
    assert 503 not in statuses[:4]   # four ran at once (one per token), their time limits ended them


async def test_long_statements_are_parsed_apart_from_short_ones():
    import threading
    pool = StatementPool(workers=4)
    try:
        short = await pool.parse(lambda text: threading.current_thread().name, "select 1;")
        long = await pool.parse(lambda text: threading.current_thread().name, "select '" + "x" * 10_000 + "';")
        assert short.startswith("statement-quick") and long.startswith("statement-long")
    finally:
        pool.shutdown()


FAST = ["select 1;", "select sqrt(2) * 3;", "select abs(-1) + max(3, 4);", "select x from Integer x where x in (1, 2);"]
NOT_FAST = [
    SLOW,                                                   # a source: counts until its time limit
    "select count(edges_with_signal('battery'));",          # a fleet function, no Edge written
    "select twice(2);",                                     # a user's function: its body may query the fleet
    "select call('twice', 2);",                             # reaches a function by name
    "select zeros(1000);",                                  # builds a value of a size it is given
    "select id(e) from Edge e;", "select count(iota(1, 10))@e from Edge e;",
    "select x from Integer x where x in (select 1);",      # a subquery
    "select [" + ", ".join(["1"] * 400) + "];",            # long: not cheap to plan
    "select csv:file_stream('/etc/passwd');", UNREAD,
]


def test_only_statements_that_provably_touch_no_edge_and_are_cheap_are_fast(client):
    from federation.keys import QUERY_SERVICE
    service = client.app[QUERY_SERVICE]
    service.engine.execute("create function twice(Integer x) -> Integer as select x * 2;")
    for text in FAST:
        assert service.is_fast(parse_one(text), text), text
    for text in NOT_FAST:
        assert not service.is_fast(parse_one(text), text), text


async def test_a_local_statement_calling_a_fleet_function_waits_for_a_statement_worker(client):
    """With every statement worker busy, `select 1;` takes the fast lane at once; a statement with
    no Edge and no @ that calls a fleet function does not: it waits for a worker like the others."""
    from federation.keys import QUERY_SERVICE
    service = client.app[QUERY_SERVICE]
    pool = service.pool
    held = [await pool.acquire(f"holder-{i}") for i in range(pool.statements.slots)]
    try:
        started = time.monotonic()
        result = await service.run("select 1;", None)
        assert [row async for row in result.rows()] == [[1]] and time.monotonic() - started < 3
        text = "select count(edges_with_signal('battery'));"
        waiting = asyncio.ensure_future(service.run(text, None))
        await asyncio.sleep(0.5)
        assert not waiting.done() and pool.fast.used == 0      # not in the fast lane: waiting
        held.pop().release()
        result = await asyncio.wait_for(waiting, 10)
        assert [row async for row in result.rows()] == [[0]]   # no edge has announced that signal
    finally:
        for slot in held:
            slot.release()


async def test_a_refusal_for_want_of_a_slot_logs_who_holds_the_lanes(caplog):
    """What the soak reads to tell a queue from CPU starvation: the holders at a refusal, and the
    cheap statements' waits and run times (wall against their thread's CPU)."""
    from federation import lanes
    pool = StatementPool(workers=4, wait_s=0.2, fast_slots=1)
    held = [await pool.acquire(who) for who in ("token-1", "token-2", "token-3", "token-4")]
    fast = await pool.acquire("token-5", local=True)             # the statement workers full: the fast lane
    assert fast.fast
    with caplog.at_level("WARNING", logger="streamql.federation.lanes"):
        with pytest.raises(Busy):
            await pool.acquire("token-9", local=True)
    census = [r.getMessage() for r in caplog.records if "statement lanes full" in r.getMessage()]
    assert len(census) == 1 and "token-9 refused (cheap)" in census[0]
    lanes_now = json.loads(census[0][census[0].index(": {") + 2:])
    assert lanes_now["statements"]["used"] == 4 and len(lanes_now["statements"]["holders"]) == 4
    assert list(lanes_now["fast"]["holders"]) == ["token-5"]
    assert all(age >= 0.2 for ages in lanes_now["statements"]["holders"].values() for age in ages)
    for slot in (*held, fast):
        slot.release()
    assert pool.statements.census() == {} and pool.fast.census() == {}
    assert await pool.submit(pool.watch.timed, lambda n: sum(range(n)), 300_000) == sum(range(300_000))
    pool.watch._summary_at -= lanes.SUMMARY_EVERY_S
    with caplog.at_level("WARNING", logger="streamql.federation.lanes"):
        (await pool.acquire("token-1", local=True)).release()
    summary = [r.getMessage() for r in caplog.records if "statement lanes over" in r.getMessage()][-1]
    assert "cheap 2 admitted" in summary and "other 4 admitted" in summary and "cheap statements ran" in summary
    assert "1 refused" in summary and "waiting for a CPU" in summary and "the event loop's thread on a CPU" in summary


async def test_a_statement_whose_client_leaves_while_it_waits_for_a_worker_never_starts(config):
    """Served as `streamql federation` serves (web.AppRunner: a handler is not cancelled when its
    client leaves — aiohttp's test server cancels it, which would hide this)."""
    import aiohttp
    from aiohttp import web

    from federation.app import create_app
    from federation.keys import QUERY_SERVICE

    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    app = runner.app
    tokens = [create_token(app[REGISTRY], Role.READ)[1] for _ in range(5)]
    pool = app[QUERY_SERVICE].pool
    body = json.dumps({"query": SLOW, "limits": {"seconds": 6}}).encode()
    try:
        async with aiohttp.ClientSession() as session:
            # four tokens fill the 4 statement workers for a few seconds
            slow = [asyncio.ensure_future(session.post(f"http://127.0.0.1:{port}/v1/query", data=body, headers={
                "Authorization": f"Bearer {tokens[i]}", "Content-Type": "application/json"})) for i in range(4)]
            deadline = time.monotonic() + 10
            while pool.statements.used < 4:
                assert time.monotonic() < deadline, "the slow statements never took the workers"
                await asyncio.sleep(0.05)
            # a fifth waits for one, and its client gives up after 1 s (closes its connection)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + tokens[4].encode() + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.close()
            while pool.watch.abandoned < 1:
                assert time.monotonic() < deadline, "the statement of a client that left still waits for a worker"
                await asyncio.sleep(0.05)
            assert pool.statements.used == 4          # it took no worker, and so never started
            for resp in await asyncio.gather(*slow):
                resp.close()
    finally:
        await runner.cleanup()
