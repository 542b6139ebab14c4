"""What a statement costs the event loop (the soak's profile, bench/README.md "Fourth session"): a
cheap statement is parsed once and run in one worker hop; a fleet statement's worker wakes the loop
once for many fragments started, not once per fragment nor once per row batch it takes; every
edge's profile is not made again for every statement. Each test counts the hops or wakes of a real
statement, and checks the rows still come, in order, with backpressure."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from federation import statement_result
from federation.auth import Role, create_token
from federation.fleet_access import BUFFERED_BATCHES, HubFleetAccess
from federation.keys import QUERY_SERVICE, REGISTRY
from streamql.fleet import FragmentRequest
from streamql.syntax import parse_one

pytestmark = pytest.mark.timeout(120)


def count_calls(obj, name: str, calls: list) -> None:
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(threading.get_ident())
        return real(*args, **kwargs)
    setattr(obj, name, counted)


async def test_a_cheap_statement_is_parsed_once_and_runs_in_one_worker_hop(client):
    service = client.app[QUERY_SERVICE]
    token = create_token(client.app[REGISTRY], Role.READ)[1]
    headers = {"Authorization": f"Bearer {token}"}
    submits: list = []
    parses: list = []
    count_calls(service.pool, "submit", submits)
    count_calls(service.pool, "parse", parses)
    for i in range(3):
        resp = await client.post("/v1/query", json={"query": "select 1 + 1;"}, headers=headers)
        lines = (await resp.text()).splitlines()
        assert resp.status == 200 and json.loads(lines[0]) == [2] and "status" in json.loads(lines[-1])
    # before: two parses per request (the check, then the run) and four hops (plan, each batch, close)
    assert len(parses) == 1 and len(submits) == 3
    resp = await client.post("/v1/query", json={"query": "select 1 +;"}, headers=headers)
    assert resp.status == 400      # a bad statement is still refused with its position
    assert (await resp.json())["error"]["kind"] == "ParseError"


async def test_a_cheap_statement_with_more_rows_than_one_hop_takes_streams_them_all(client, monkeypatch):
    monkeypatch.setattr(statement_result, "BATCH_ROWS", 2)    # 7 rows: 4 batches, more than AT_ONCE_BATCHES
    token = create_token(client.app[REGISTRY], Role.READ)[1]
    headers = {"Authorization": f"Bearer {token}"}
    text = "select x from Integer x where x in (7, 1, 5, 3, 9, 2, 8);"
    assert client.app[QUERY_SERVICE].is_fast(parse_one(text), text)
    resp = await client.post("/v1/query", json={"query": text}, headers=headers)
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert resp.status == 200 and sorted(row[0] for row in lines[:-1]) == [1, 2, 3, 5, 7, 8, 9]
    assert lines[-1]["rows"] == 7 and "error" not in lines[-1]
    # past its rows limit after its first batch: the rows before the limit, then the error
    resp = await client.post("/v1/query", json={"query": text, "limits": {"rows": 5}}, headers=headers)
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert resp.status == 200 and 2 <= len(lines) - 1 <= 5 and all(isinstance(row, list) for row in lines[:-1])
    assert lines[-1]["error"]["kind"] == "LimitError"


ROWS_PER_EDGE = 120      # one row a batch: 20 edges send 2,400 batches, far past BUFFERED_BATCHES


async def test_a_feed_wakes_the_loop_once_for_many_calls_and_keeps_its_backpressure(fleet):
    edges = [fleet.edge(f"e{i:02d}", answer=lambda source, frame, i=i: ([i * 1000 + k] for k in range(ROWS_PER_EDGE)))
             for i in range(20)]
    for edge in edges:
        await edge.connect()
    access: HubFleetAccess = fleet.app[QUERY_SERVICE].access
    loop = asyncio.get_running_loop()
    wakes: list = []
    count_calls(loop, "call_soon_threadsafe", wakes)
    try:
        def worker() -> tuple[dict, dict, int]:
            feed = access.open_feed()
            for edge in edges:
                feed.start(FragmentRequest(edge.edge_id, "select …;"))
            time.sleep(0.5)                     # not reading: the buffer fills, the loop stops reading
            held = len(feed._events)
            rows: dict = {edge.edge_id: [] for edge in edges}
            ends: dict = {}
            deadline = time.monotonic() + 60
            while len(ends) < len(edges) and time.monotonic() < deadline:
                event = feed.next(1.0)
                if event is None:
                    continue
                if event.kind == "rows":
                    rows[event.device] += list(event.columns[0])
                elif event.kind == "end":
                    ends[event.device] = event.outcome
            feed.close()
            return rows, ends, held
        rows, ends, held = await asyncio.to_thread(worker)
    finally:
        del loop.call_soon_threadsafe
    assert held <= BUFFERED_BATCHES + len(edges)      # backpressure: the loop stopped at the buffer's size
    assert ends == {edge.edge_id: "ok" for edge in edges}
    for i, edge in enumerate(edges):                  # every row, in each edge's order
        assert rows[edge.edge_id] == [i * 1000 + k for k in range(ROWS_PER_EDGE)]
    mine = [ident for ident in wakes if ident != threading.get_ident()]
    # before: one wake per fragment started and one per batch taken (2,420 here)
    assert len(mine) < 200, len(mine)


async def test_profiles_are_made_again_only_when_an_edge_announces_something_new(fleet, monkeypatch):
    from federation import fleet_access
    made: list = []
    real = fleet_access.profile_of
    monkeypatch.setattr(fleet_access, "profile_of", lambda announced: made.append(1) or real(announced))
    capabilities = {"signals": [{"name": "speed", "type": "Real"}], "functions": ["f(Real) -> Real"]}
    edges = [fleet.edge(f"p{i}", capabilities=capabilities, models={"m": "1"}) for i in range(5)]
    for edge in edges:
        await edge.connect()
    access: HubFleetAccess = fleet.app[QUERY_SERVICE].access
    first = await asyncio.to_thread(access.profiles)
    assert len(first) == 1 and first[0].models == ("m",) and len(made) == 5
    assert await asyncio.to_thread(access.profiles) == first and len(made) == 5     # nothing new: none made
    # an edge's ack says it now has another model (the hub replaces the announced models, as
    # EdgeHub.on_reply does): its profile, and only its, is made again
    access.hub._announced["p3"]["models"] = {"m": "1", "n": "2"}
    again = await asyncio.to_thread(access.profiles)
    assert len(made) == 6 and sorted(p.models for p in again) == [("m",), ("m", "n")]


async def test_statement_threads_run_below_the_event_loop():
    """Every thread a statement runs on (its work, its parse, a stream's batches) is WORKER_NICE
    (at least ten) steps below the loop's thread (capped at 19), the loop's own untouched."""
    import os

    from federation.lanes import WORKER_NICE, StatementPool

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = StatementPool(workers=2)
    try:
        loop_nice = nice()
        slot = await pool.acquire("a")
        seen = [await pool.submit(nice), await pool.submit(nice, stream=True), await pool.parse(lambda _t: nice(), "x"),
                await pool.parse(lambda _t: nice(), "x" * 10_000), await pool.quick(nice)]
        slot.release()
    finally:
        pool.shutdown()
    assert nice() == loop_nice                      # the loop's own thread untouched
    # ten steps at least: at +5 a runnable statement thread still weighed a third of the loop's
    assert WORKER_NICE >= 10 and all(n == min(19, loop_nice + WORKER_NICE) for n in seen), (loop_nice, seen)


def test_device_facts_are_decoded_once_and_stay_the_registrys(tmp_path, monkeypatch):
    """The registry decodes a device's JSON columns once per text (every fleet statement reads every
    selected device): what a reader changes at the top of a device's dicts is not seen by the next
    reader, and a change written to the registry is."""
    from federation.auth import provision
    from federation.registry import Registry

    registry = Registry(tmp_path / "registry.db")
    try:
        provision(registry, "d1", {"region": "EU"}, {"signals": ["battery"]})
        registry.update_device("d1", health={"cpu_percent": 3.0})
        registry.close()
        registry = Registry(tmp_path / "registry.db")             # reopened: nothing decoded yet
        import types

        from federation import registry as registry_module
        loads: list = []
        real = registry_module.json
        monkeypatch.setattr(registry_module, "json", types.SimpleNamespace(
            loads=lambda text: loads.append(text) or real.loads(text), dumps=real.dumps))
        first = registry.get_devices(["d1"])[0]
        assert len(loads) == 3                                      # metadata, capabilities, health
        first.metadata["region"] = "changed by a reader"
        first.health.clear()
        again = registry.get_devices(["d1"])[0]
        assert again.metadata == {"region": "EU"} and again.health == {"cpu_percent": 3.0}
        assert again.capabilities == {"signals": ["battery"]} and len(loads) == 3   # none decoded again
        registry.update_device("d1", metadata={"region": "US"}, health={"cpu_percent": 5.0})
        third = registry.get_devices(["d1"])[0]
        assert third.metadata == {"region": "US"} and third.health == {"cpu_percent": 5.0}
    finally:
        registry.close()
