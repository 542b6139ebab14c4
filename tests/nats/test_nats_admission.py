"""Admission at scale through the auth callout: a connect storm against a real nats-server secured by
federation.nats_config, answered from a real PostgreSQL registry whose round trips are slowed to
what a loaded database costs. The callout must answer in batches off the event loop, and drop what
the server has already given up on."""
from __future__ import annotations

import asyncio
import time

import nats
import nkeys

from federation import nats_jwt, nats_subjects
from federation.auth import provision
from federation.registry_pg import PgRegistry
from tests.federation.nats_secured import secured_nats

LATENCY_S = 0.03      # per registry round trip (a PostgreSQL busy with 10,000 edges' heartbeats)
EDGES = 150           # one at a time, 150 × 2 round trips = 9 s, past the server's 2 s auth timeout


class SlowPg(PgRegistry):
    """Every token or device read takes LATENCY_S longer (blocking, as a real round trip does)."""

    latency = 0.0
    calls = 0

    def _slow(self) -> None:
        self.calls += 1
        time.sleep(self.latency)

    def token_by_hash(self, token_hash):
        self._slow()
        return super().token_by_hash(token_hash)

    def get_device(self, device_id):
        self._slow()
        return super().get_device(device_id)

    def tokens_by_hashes(self, token_hashes):
        self._slow()
        return super().tokens_by_hashes(token_hashes)


async def test_a_connect_storm_is_admitted_through_a_slow_registry(tmp_path, pg_server):
    registry = SlowPg(pg_server.new_database())
    try:
        tokens = [provision(registry, f"s{i}").token for i in range(EDGES)]
        registry.latency = LATENCY_S
        async with secured_nats(tmp_path, registry=registry) as secured:
            async def connect(i):
                try:
                    return await nats.connect(secured.server.url, token=tokens[i], allow_reconnect=False,
                                              connect_timeout=10, max_reconnect_attempts=0,
                                              inbox_prefix=nats_subjects.inbox_prefix(f"s{i}").encode())
                except Exception as error:  # noqa: BLE001 - counted below
                    return error

            started = time.monotonic()
            results = await asyncio.gather(*(connect(i) for i in range(EDGES)))
            took = time.monotonic() - started
            failed = [r for r in results if isinstance(r, Exception)]
            for nc in results:
                if not isinstance(nc, Exception):
                    await nc.close()
            assert not failed, f"{len(failed)} of {EDGES} refused in {took:.1f} s: {failed[:3]}"
            assert secured.service.granted == EDGES
            # batches, not one round trip (or two) per connection
            assert registry.calls < EDGES / 4, registry.calls
    finally:
        registry.close()


async def test_requests_past_their_expiry_are_dropped_unread(tmp_path):
    """An expired request costs no registry read and gets no answer; a live one is answered."""
    async with secured_nats(tmp_path) as secured:
        service = secured.service
        e1 = provision(secured.registry, "e1")
        server = nkeys.from_seed(nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_SERVER))
        user = nats_jwt.public_key(nats_jwt.new_seed("user"))

        def request(exp):
            return nats_jwt.encode({"exp": exp, "nats": {
                "user_nkey": user, "server_id": {"id": "n0"}, "client_info": {},
                "connect_opts": {"auth_token": e1.token}}}, server).encode()

        answered = []

        class Msg:
            def __init__(self, data):
                self.data, self.reply = data, "x"

            async def respond(self, data):
                answered.append(data)

        reads = []
        lookup = secured.registry.token_by_hash
        secured.registry.token_by_hash = lambda digest: reads.append(digest) or lookup(digest)
        try:
            await service._on_request(Msg(request(int(time.time()) - 1)))
            await asyncio.sleep(0.2)
            assert service.expired == 1 and not answered and not reads
            await service._on_request(Msg(request(int(time.time()) + 5)))
            deadline = time.monotonic() + 3
            while not answered and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(answered) == 1 and len(reads) == 1 and service.granted == 1
        finally:
            secured.registry.token_by_hash = lookup


async def test_a_failed_connect_retries_through_the_gate(monkeypatch):
    """A simulated fleet's edges: at most the gate's count of NATS connects at once, retries included
    (a refused connect that came back ungated fed the storm that refused it)."""
    from edge_engine import nats_link
    from edge_engine.config import Reconnect

    state = {"now": 0, "most": 0, "tries": 0}

    async def refused(*args, **kwargs):
        state["now"] += 1
        state["tries"] += 1
        state["most"] = max(state["most"], state["now"])
        try:
            await asyncio.sleep(0.02)
            raise nats.errors.Error("nats: 'Authorization Violation'")
        finally:
            state["now"] -= 1

    monkeypatch.setattr(nats_link.nats, "connect", refused)
    gate = asyncio.Semaphore(2)
    links = [nats_link.NatsLink(handler=None, servers=["nats://127.0.0.1:1"], edge_id=f"g{i}", token="t",
                                reconnect=Reconnect(initial_s=0.001, max_s=0.005), gate=gate) for i in range(12)]
    tasks = [asyncio.create_task(link.run()) for link in links]
    await asyncio.sleep(1.0)
    for link in links:
        await link.stop()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert state["tries"] > 2 * len(links)       # they did retry
    assert state["most"] <= 2, state
