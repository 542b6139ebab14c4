"""An edge reads a bundle from the object store with direct gets (edge_engine.nats_link.fetch_object),
not nats-py's `ObjectStore.get`, which makes a consumer on the server per read: 10,000 edges
fetching one deployment's bundle were 10,000 consumers made and deleted at once. The bytes must be
the ones put, whatever the chunking; a damaged object must not pass."""
from __future__ import annotations

import base64
import hashlib
import json
import random

import nats
import pytest
from nats.js.api import ObjectMeta, ObjectMetaOptions, ObjectStoreConfig

from edge_engine.nats_link import fetch_object
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)

pytestmark = pytest.mark.timeout(60)


async def _store(server, bucket: str):
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    store = await js.create_object_store(bucket, config=ObjectStoreConfig(bucket=bucket))
    return nc, js, store


async def test_objects_of_one_and_of_many_chunks_read_back_exactly(server):
    nc, js, store = await _store(server, "fetch_exact")
    try:
        rng = random.Random(7)
        objects = {"empty/1": b"", "small/1": rng.randbytes(100 << 10), "many/1": rng.randbytes(300 << 10 | 123)}
        for name, data in objects.items():
            # 64 KiB chunks: the 300 KB object is five of them, interleaved in the stream with nothing else
            await store.put(name, data, meta=ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=64 << 10)))
        replaced = rng.randbytes(200 << 10)    # a name put again: its old chunks are purged, the new ones read
        await store.put("small/1", replaced, meta=ObjectMeta(name="small/1",
                                                              options=ObjectMetaOptions(max_chunk_size=64 << 10)))
        objects["small/1"] = replaced
        fetched = {name: await fetch_object(js, "fetch_exact", name) for name in objects}
        info = await js.stream_info("OBJ_fetch_exact")
        assert info.state.consumer_count == 0       # the direct reads made no consumer
        for name, data in objects.items():
            assert hashlib.sha256(fetched[name]).hexdigest() == hashlib.sha256(data).hexdigest(), name
            assert fetched[name] == (await store.get(name)).data     # nats-py's own reader agrees
    finally:
        await nc.close()


async def test_a_missing_object_and_one_whose_chunks_do_not_match_its_digest_fail(server):
    nc, js, store = await _store(server, "fetch_bad")
    try:
        with pytest.raises(Exception):
            await fetch_object(js, "fetch_bad", "nothing/1")
        await store.put("b/1", b"x" * 5000)
        # the description rewritten with another digest (as a damaged or forged one would read)
        meta_subject = "$O.fetch_bad.M." + base64.urlsafe_b64encode(b"b/1").decode()
        described = json.loads((await js.get_msg("OBJ_fetch_bad", subject=meta_subject, direct=True)).data)
        described["digest"] = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(b"y").digest()).decode()
        await js.publish(meta_subject, json.dumps(described).encode(), headers={"Nats-Rollup": "sub"})
        with pytest.raises(ValueError, match="digest"):
            await fetch_object(js, "fetch_bad", "b/1")
    finally:
        await nc.close()


class _LaggingReplica:
    """A JetStream context whose direct gets are answered by a replica that has not yet applied the
    put (what a three-server cluster with replicas 3 answered now and then): "not found"."""

    def __init__(self, js):
        self.js, self.direct_misses = js, 0

    async def get_msg(self, stream, *, direct=False, **where):
        if direct:
            self.direct_misses += 1
            from nats.js.errors import NotFoundError
            raise NotFoundError()
        return await self.js.get_msg(stream, **where)


async def test_a_direct_get_that_finds_nothing_is_asked_again_of_the_leader(server):
    nc, js, store = await _store(server, "fetch_lag")
    try:
        data = random.Random(3).randbytes(150 << 10)
        await store.put("lag/1", data, meta=ObjectMeta(name="lag/1", options=ObjectMetaOptions(max_chunk_size=64 << 10)))
        lagging = _LaggingReplica(js)
        assert await fetch_object(lagging, "fetch_lag", "lag/1") == data
        assert lagging.direct_misses == 4          # the description and three chunks, each asked again
    finally:
        await nc.close()


class _BusyServer:
    """A JetStream context whose gets time out now and then (a server answering 10,000 edges'
    fetches at once): the first `fail` gets of every read time out, as nats-py raises it."""

    def __init__(self, js, fail: int):
        self.js, self.fail, self.timeouts, self._failed = js, fail, 0, {}

    async def get_msg(self, stream, **where):
        from nats.errors import TimeoutError as NatsTimeout
        key = repr(sorted((k, v) for k, v in where.items() if k != "direct"))
        if self._failed.get(key, 0) < self.fail:
            self._failed[key] = self._failed.get(key, 0) + 1
            self.timeouts += 1
            raise NatsTimeout()
        return await self.js.get_msg(stream, **where)


async def test_a_get_that_times_out_is_asked_again_and_one_that_always_does_fails(server, monkeypatch):
    import edge_engine.nats_link as nats_link
    monkeypatch.setattr(nats_link, "GET_RETRY_S", 0.01)
    nc, js, store = await _store(server, "fetch_busy")
    try:
        data = random.Random(5).randbytes(150 << 10)
        await store.put("busy/1", data, meta=ObjectMeta(name="busy/1", options=ObjectMetaOptions(max_chunk_size=64 << 10)))
        busy = _BusyServer(js, fail=2)
        assert await fetch_object(busy, "fetch_busy", "busy/1") == data
        assert busy.timeouts == 8                  # the description and three chunks, each timed out twice
        hopeless = _BusyServer(js, fail=nats_link.GET_ATTEMPTS)
        with pytest.raises(TimeoutError):
            await fetch_object(hopeless, "fetch_busy", "busy/1")
        assert hopeless.timeouts == nats_link.GET_ATTEMPTS     # the description only, then it gives up
    finally:
        await nc.close()
