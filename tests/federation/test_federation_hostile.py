"""The resource-safety measurements, reproduced with real processes: a federation and 21 simulated
edges (`streamql federation`, `streamql edge --simulate 21`) and one hostile client or device at a
time. After every act, `select 1;` is still answered over POST /v1/query and every edge is still
connected; the federation's peak memory stays bounded; SIGTERM stops both processes within 10 s
even with sockets, statements and slow clients open."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from federation.testing import FakeEdge
from hostile_process import Deployment
from hostile_zips import signed_bomb
from streamql import wire
from streamql.models import keygen

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

EDGES = 21
UNREAD = "select stream of id(e), x from Edge e, Real x where x in signal_stream('engine_speed')@e;"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    with Deployment(tmp_path_factory.mktemp("hostile"), edges=EDGES, federation_flags=("--idle-timeout", "3")) as made:
        yield made


async def token(session, fleet, role: str) -> tuple[int, str]:
    async with session.post(fleet.url + "/v1/tokens", json={"role": role}, headers=fleet.header()) as resp:
        body = await resp.json()
        return body["id"], body["token"]


async def test_zip_bombs_are_refused_quickly_with_bounded_memory_and_queries_still_answered(deployment, tmp_path):
    fleet = deployment
    mallory, _ = keygen(tmp_path / "mallory")
    unsigned = signed_bomb(None, inflated_mib=1000)           # ~1 MiB inflating to ~1 GiB, sizes declared
    foreign = signed_bomb(mallory, inflated_mib=1000)
    lying = signed_bomb(None, inflated_mib=3000, declared=1000)  # ~3 MiB inflating to ~3 GiB, said to be 1 KB
    baseline = fleet.rss_mb()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        _, deploy = await token(session, fleet, "deploy")

        async def upload(data: bytes) -> tuple[int, float, dict]:
            started = time.monotonic()
            async with session.post(fleet.url + "/v1/models", data=data, headers=fleet.header(deploy)) as resp:
                return resp.status, time.monotonic() - started, await resp.json()

        for data, words in ((unsigned, "unpacks to"), (foreign, "unpacks to"), (lying, "not signed")):
            status, seconds, body = await upload(data)
            assert status == 400 and words in body["error"]["message"] and seconds < 10, (status, seconds, body)
            await fleet.alive(session)
        # three at once, while statements are answered
        uploads = asyncio.gather(*(upload(d) for d in (unsigned, foreign, lying)))
        for _ in range(3):
            await fleet.alive(session)
        results = await uploads
        assert sorted(status for status, _, _ in results) in ([400, 400, 400], [400, 400, 429])
        assert all(seconds < 10 for _, seconds, _ in results)
        await fleet.alive(session)
    assert fleet.peak_rss_mb() < baseline + 200, (baseline, fleet.peak_rss_mb())


async def test_deep_json_a_megabyte_statement_and_200_slowloris_clients(deployment):
    fleet = deployment
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        deep = '{"query": "select 1;", "limits": ' + "[" * 100_000 + "]" * 100_000 + "}"
        async with session.post(fleet.url + "/v1/query", data=deep, headers={
                **fleet.header(), "Content-Type": "application/json"}) as resp:
            body = await resp.json()
            assert resp.status == 400 and "nested too deeply" in body["error"]["message"]
        await fleet.alive(session)
        statement = "select " + "+".join(["1"] * 500_000) + ";"   # 1 MB
        async with session.post(fleet.url + "/v1/query", json={"query": statement}, headers=fleet.header()) as resp:
            body = await resp.json()
            assert resp.status == 413 and "max_statement_bytes" in body["error"]["message"]
        await fleet.alive(session)
        slow = []
        for _ in range(200):  # request heads that never end
            reader, writer = await asyncio.open_connection("127.0.0.1", fleet.port)
            writer.write(b"GET /v1/edges HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append((reader, writer))
        await fleet.alive(session)
        started = time.monotonic()
        for reader, writer in slow:  # closed by the federation (--idle-timeout 3 here; 15 s by default)
            assert await asyncio.wait_for(reader.read(), 20) == b""
            writer.close()
        assert time.monotonic() - started < 15
        await fleet.alive(session)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_statements_of_too_many_tokens_are_refused_unparsed_with_a_position(deployment):
    """Just under 64 KiB, `1+1+…` and an `in (…)` list of 12,000 numbers each took the federation
    a second of CPU to parse (parsed twice, the list bound too), and 20 hostile clients sending
    them kept its core busy; past 8,192 tokens they are refused after a count in the regex engine."""
    fleet = deployment
    room = 64 * 1024 - 64
    long_sum = "select " + "+".join(["1"] * ((room - 8) // 2)) + ";"
    long_list = "select x from Integer x where x in (" + ",".join(str(i) for i in range(12_000)) + ");"
    assert len(long_list.encode()) < room
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        before = cpu_seconds(fleet.federation.pid)
        for _ in range(10):
            for text in (long_sum, long_list):
                async with session.post(fleet.url + "/v1/query", json={"query": text}, headers=fleet.header()) as resp:
                    error = (await resp.json())["error"]
                assert resp.status == 400 and error["kind"] == "ParseError", error
                assert "more than 8192 tokens" in error["message"] and error["line"] == 1, error
                # the sum's 8,193rd token is its 8,192nd `1` or `+`, after `select `
                assert error["column"] == (8 + 8191 if text is long_sum else error["column"]), error
        spent = cpu_seconds(fleet.federation.pid) - before
        # 20 statements: about 20 s of CPU when each was parsed; well under 1 s refused unparsed
        assert spent < 6, spent
        await fleet.alive(session)
        # under the cap, a long list is answered in full
        shorter = "select count(x) from Integer x where x in (" + ",".join(str(i) for i in range(4_000)) + ");"
        async with session.post(fleet.url + "/v1/query", json={"query": shorter}, headers=fleet.header()) as resp:
            assert resp.status == 200 and (await resp.text()).splitlines()[0] == "[4000]"


async def test_a_device_with_an_oversized_hello_or_a_publish_flood_harms_nobody(deployment):
    fleet = deployment
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        tokens = {}
        for device in ("chatty", "flood"):
            async with session.post(fleet.url + "/v1/edges", json={"id": device}, headers=fleet.header()) as resp:
                tokens[device] = (await resp.json())["token"]
        chatty = FakeEdge(fleet.url, tokens["chatty"], "chatty", metadata={"blob": "x" * (14 << 20)})
        welcome = await chatty.connect()
        assert not welcome["accepted"] and "bytes" in welcome["reason"]
        await chatty.shutdown()
        async with session.get(fleet.url + "/v1/edges/chatty", headers=fleet.header()) as resp:
            assert (await resp.json())["metadata"] == {}
        await fleet.alive(session)

        flood = FakeEdge(fleet.url, tokens["flood"], "flood")
        await flood.connect()
        try:
            rss_before, started = fleet.rss_mb(), time.monotonic()
            frame = wire.encode(wire.make("publish", seq=1, flow="flood", n=100_000, cols=[np.zeros(100_000)]))
            for seq in range(1, 501):  # 400 MB, as fast as the socket takes it, ignoring every refusal
                data = wire.encode(wire.make("publish", seq=seq, flow="flood", n=100_000, cols=[np.zeros(100_000)])) \
                    if seq > 1 else frame
                await flood.ws.send_bytes(data)
            seconds = time.monotonic() - started
            await fleet.alive(session)
            async with session.get(fleet.url + "/v1/flows", headers=fleet.header()) as resp:
                kept = (await resp.json())["flows"].get("flood", {}).get("records", 0)
            # 32 MiB of burst plus 4 MiB a second, at 800 KB a record
            assert kept <= (32 + 4 * (seconds + 3)) * 1.05e6 / 800_000, (kept, seconds)
            assert fleet.rss_mb() < rss_before + 200
            async with session.get(fleet.url + "/metrics") as resp:
                assert 'streamql_publish_refused_total{reason="held"}' in await resp.text()
        finally:
            await flood.shutdown()
        await fleet.alive(session)


async def test_revocation_and_one_reader_holding_streams_it_never_reads(deployment):
    fleet = deployment
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        reader_id, reader = await token(session, fleet, "read")
        ws = await session.ws_connect(fleet.url + "/v1/query/ws", headers=fleet.header(reader))
        await ws.send_json({"type": "query", "id": "s", "query": UNREAD})
        assert (await ws.receive_json(timeout=20))["type"] == "columns"
        streams, refused = [], 0
        for _ in range(32):  # opened, never read
            resp = await session.post(fleet.url + "/v1/query", json={"query": UNREAD}, headers=fleet.header(reader))
            if resp.status == 429:
                refused += 1
                resp.close()
            else:
                assert resp.status == 200
                streams.append(resp)
        assert refused >= 16 and len(streams) <= 15
        _, other = await token(session, fleet, "read")
        await fleet.alive(session, other)
        async with session.post(fleet.url + "/v1/query", headers=fleet.header(other), json={
                "query": "select id(e), v from Edge e, Real v where v = signal_value('engine_speed')@e;"}) as resp:
            lines = (await resp.text()).splitlines()
        assert resp.status == 200 and len(lines) == EDGES + 1, lines[-1]  # every edge answered another user
        async with session.delete(f"{fleet.url}/v1/tokens/{reader_id}", headers=fleet.header()) as resp:
            assert resp.status == 200
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
        assert msg.data == 4003 and "revoked" in msg.extra
        for stream in streams:  # the revoked token's statements were stopped: their bodies end
            with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)):
                async with asyncio.timeout(10):
                    while await stream.content.readany():
                        pass
            stream.close()
        await fleet.alive(session, other)


async def test_sigterm_stops_the_federation_and_the_fleet_within_10_s(tmp_path):
    with Deployment(tmp_path, edges=5) as fleet:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            ws = await session.ws_connect(fleet.url + "/v1/query/ws", headers=fleet.header())
            await ws.send_json({"type": "query", "id": "s", "query": UNREAD})
            assert (await ws.receive_json(timeout=20))["type"] == "columns"
            stream = await session.post(fleet.url + "/v1/query", json={"query": UNREAD}, headers=fleet.header())
            assert stream.status == 200
            slow = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", fleet.port)
                writer.write(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
                slow.append(writer)
            # a statement still computing its answer when the signal comes: 503, not the 400 of a
            # wrong statement (the client may try again, elsewhere or later)
            computing = asyncio.ensure_future(session.post(
                fleet.url + "/v1/query", json={"query": "select count(iota(1, 1000000000000));"},
                headers=fleet.header()))
            await asyncio.sleep(1.5)
            code, seconds = await asyncio.to_thread(fleet.stop, fleet.federation)
            assert seconds < 10 and code == 0, (code, seconds, fleet.log("federation")[-2000:])
            answer = await asyncio.wait_for(computing, 10)
            assert answer.status == 503 and "Retry-After" in answer.headers, answer.status
            assert (await answer.json())["error"]["kind"] == "Busy"
            code, seconds = await asyncio.to_thread(fleet.stop, fleet.fleet)
            assert seconds < 10 and code == 0, (code, seconds, fleet.log("fleet")[-2000:])
            for writer in slow:
                writer.close()
            stream.close()
            await ws.close()
