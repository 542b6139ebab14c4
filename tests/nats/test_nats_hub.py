"""The NATS hub in-process against a real nats-server: what a hostile or confused publisher on the
edge subjects gets (NATS permissions keep a device to its own subjects; the hub checks the rest),
and the configuration of the transport."""
from __future__ import annotations

import argparse
import asyncio
import time

import nats
import pytest

from edge_engine.config import ConfigError, load_config
from federation import nats_subjects as subjects
from federation.app import create_app
from federation.auth import provision
from federation.cli import register
from federation.config import FederationConfig
from federation.keys import HUB, REGISTRY
from federation.nats_hub import NatsHub
from tests.nats_servers import module_nats_server  # noqa: F401  (the fixture `server`)
from streamql import wire

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def node(aiohttp_client, tmp_path, server):
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, nats=(server.url,), nats_node="T",
                              heartbeat_s=1.0)
    client = await aiohttp_client(create_app(config))
    nc = await nats.connect(server.url)
    try:
        yield client.app, nc
    finally:
        await nc.close()


def hello(edge: str, **extra) -> bytes:
    fields = {"edge": edge, "software": "test", "metadata": {}, "capabilities": {"signals": ["x"]}, "models": {},
              "restarts": 0, "versions": list(wire.SUPPORTED_VERSIONS), **extra}
    return wire.encode(wire.make("hello", **fields))


async def welcome_for(nc, subject: str, data: bytes) -> wire.Frame:
    reply = await nc.request(subject, data, timeout=5)
    return wire.decode(reply.data, accept=wire.FROM_FEDERATION)


async def test_a_registered_edge_is_welcomed_and_online(node):
    app, nc = node
    provision(app[REGISTRY], "dev.1", {"region": "US"}, {})
    assert isinstance(app[HUB], NatsHub)
    welcome = await welcome_for(nc, subjects.up_all("dev.1"), hello("dev.1"))
    assert welcome["accepted"] and welcome["edge"] == "dev.1" and welcome["max_frame"] <= 8 << 20
    assert app[HUB].is_online("dev.1") and app[HUB].announced("dev.1")["signals"] == [{"name": "x"}]


async def test_a_hello_speaking_for_another_edge_is_refused(node):
    app, nc = node
    provision(app[REGISTRY], "victim", {}, {})
    provision(app[REGISTRY], "intruder", {}, {})
    welcome = await welcome_for(nc, subjects.up_all("intruder"), hello("victim"))
    assert not welcome["accepted"] and "speaks as 'intruder'" in welcome["reason"]
    assert not app[HUB].is_online("victim")


async def test_an_unknown_device_is_refused(node):
    app, nc = node
    welcome = await welcome_for(nc, subjects.up_all("ghost"), hello("ghost"))
    assert not welcome["accepted"] and "no device 'ghost'" in welcome["reason"]


async def test_garbage_and_frames_out_of_place_leave_the_node_serving(node):
    app, nc = node
    provision(app[REGISTRY], "ok", {}, {})
    for subject in (subjects.up_all("ok"), subjects.up("ok", "T"), "sql.up.bad=zz.T", "sql.up.ok", "sql.up.ok.T.x"):
        for data in (b"", b"\xff\x00garbage", wire.encode(wire.make("end", qid="nope", outcome="ok", rows=0,
                                                                         seconds=0.0))):
            await nc.publish(subject, data)
    await nc.publish(subjects.up_all("ok"), wire.encode(wire.make("health", restarts=0, time=time.time(), uptime_s=1.0)))
    await nc.flush()
    welcome = await welcome_for(nc, subjects.up_all("ok"), hello("ok"))
    assert welcome["accepted"]


async def test_an_edge_silent_for_three_heartbeats_goes_offline(node):
    app, nc = node
    provision(app[REGISTRY], "quiet", {}, {})
    assert (await welcome_for(nc, subjects.up_all("quiet"), hello("quiet")))["accepted"]
    deadline = time.monotonic() + 15
    while app[HUB].is_online("quiet") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not app[HUB].is_online("quiet")


async def test_bye_takes_an_edge_offline_at_once(node):
    app, nc = node
    provision(app[REGISTRY], "leaving", {}, {})
    assert (await welcome_for(nc, subjects.up_all("leaving"), hello("leaving")))["accepted"]
    await nc.publish(subjects.up_all("leaving"), b"", headers={"Sql-Kind": "bye"})
    await nc.flush()
    for _ in range(50):
        if not app[HUB].is_online("leaving"):
            break
        await asyncio.sleep(0.05)
    assert not app[HUB].is_online("leaving")


def test_federation_flags_and_their_mistakes(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["federation", "--data", str(tmp_path), "--nats", "nats://a:4222,nats://b:4222",
                              "--nats", "nats://c:4222", "--nats-node", "fed-a", "--nats-lease", "4"])
    config = FederationConfig.from_args(args)
    assert config.nats == ("nats://a:4222", "nats://b:4222", "nats://c:4222")
    assert config.nats_node == "fed-a" and config.nats_lease_s == 4
    assert FederationConfig.from_args(parser.parse_args(["federation", "--data", str(tmp_path)])).nats == ()
    with pytest.raises(ValueError, match="nats://host:port"):
        FederationConfig(data_dir=tmp_path, nats=("http://a:4222",))
    with pytest.raises(ValueError, match="not 'all'"):
        FederationConfig(data_dir=tmp_path, nats=("nats://a:4222",), nats_node="all")


def test_edge_config_takes_nats_servers_from_the_file_and_the_flag(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('id = "wl-1"\nnats = ["nats://a:4222", "nats://b:4222"]\n')
    assert load_config(path).nats == ["nats://a:4222", "nats://b:4222"]
    path.write_text('id = "wl-1"\nnats = "ws:/nowhere"\n')
    with pytest.raises(ConfigError, match="nats"):
        load_config(path)


def test_both_carriers_satisfy_the_transport_interfaces():
    from edge_engine.link import Link
    from edge_engine.nats_link import NatsConnection, NatsLink
    from edge_engine.transport import EdgeLink, LinkConnection
    from federation.hub import EdgeHub
    from federation.transport import EdgeTransport

    for hub in (EdgeHub, NatsHub):
        missing = [name for name in vars(EdgeTransport) if not name.startswith("_")
                   and not callable(getattr(hub, name, None))]
        assert not missing, (hub, missing)
    for link in (Link, NatsLink):
        assert all(callable(getattr(link, name, None)) for name in ("run", "stop")), link
    assert all(callable(getattr(NatsConnection, name, None)) for name in ("send", "send_bytes", "close"))
    assert EdgeLink and LinkConnection


async def test_records_lost_on_their_way_to_a_node_come_again_in_order(node):
    # a server that dies while a fetch's records travel to the node: they come again only after
    # ack_wait, when later ones would have been taken and they refused as old; the node sees the
    # hole and has the stream delivered again from its ack floor, so every record is kept, once
    app, nc = node
    hub = app[HUB]
    consume = next(t for t in hub._background if t.get_name() == "nats-published")
    consume.cancel()
    await asyncio.gather(consume, return_exceptions=True)
    js = nc.jetstream()
    for seq in range(1, 7):
        frame = wire.make("publish", seq=seq, flow="lost", n=1, cols=[[float(seq)]], time=time.time())
        await js.publish(subjects.publish("e1"), wire.encode(frame),
                         headers={"Nats-Msg-Id": f"e1:L:{seq}", "Sql-Log": "L"})
    thief = await js.pull_subscribe(subjects.publish_wildcard(), durable=hub._consumer, stream=subjects.PUBLISH_STREAM,
                                    config=hub._published_consumer())
    lost = await thief.fetch(2, timeout=5)            # delivered, never acknowledged: lost on the way
    assert len(lost) == 2     # (the cancelled loop's own last fetch may have lost record 1 the same way)
    await thief.unsubscribe()
    hub._background.append(asyncio.create_task(hub._consume_published(), name="nats-published"))
    deadline = time.monotonic() + 30
    while len(hub.publish_log.read(flow="lost")) < 6:
        assert time.monotonic() < deadline, [r.seq for r in hub.publish_log.read(flow="lost")]
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert [r.seq for r in hub.publish_log.read(flow="lost")] == [1, 2, 3, 4, 5, 6]
    assert hub.publish_log.missing("e1") == 0


class _Handler:
    """The least an edge daemon does for its link (edge_engine.link.LinkHandler)."""

    def __init__(self, edge: str):
        self.edge, self.sessions = edge, 0

    def hello(self) -> dict:
        return {"edge": self.edge, "software": "test", "metadata": {}, "capabilities": {"signals": ["x"]},
                "models": {}, "restarts": 0, "versions": list(wire.SUPPORTED_VERSIONS)}

    async def connected(self, conn, welcome) -> None:
        self.sessions += 1

    async def handle(self, conn, frame) -> None:
        pass

    def health(self) -> dict:
        return {"time": time.time(), "uptime_s": 1.0, "restarts": 0}

    async def disconnected(self, conn) -> None:
        pass


async def test_an_edge_whose_nats_client_gave_up_connects_afresh(node, server):
    """nats-py closes a client for good after a reconnect refused twice (an auth callout answering too
    late under a connect storm): the edge's link makes a new one instead of failing on the closed one."""
    from edge_engine.config import Reconnect
    from edge_engine.nats_link import NatsLink

    app, _ = node
    provision(app[REGISTRY], "phoenix", {}, {})
    handler = _Handler("phoenix")
    link = NatsLink(handler, [server.url], "phoenix", None, reconnect=Reconnect(initial_s=0.05, max_s=0.2),
                    heartbeat_s=1.0, gate=asyncio.Semaphore(1))
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        first = link.nc
        await first.close()          # as nats-py does when it gives up
        deadline = time.monotonic() + 10
        while not (handler.sessions >= 2 and link.connected.is_set()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert handler.sessions >= 2 and link.nc is not first and link.nc.is_connected, link.last_error
        assert app[HUB].is_online("phoenix")
    finally:
        await link.stop()
        await asyncio.wait_for(task, 10)


async def test_a_stopping_node_takes_no_hello_and_writes_nothing_for_it(node):
    """A node stopping reads nothing more from its edges (another node answers): at 10,000 edges a
    hello taken during the stop wrote the edge online on the event loop, waited for the registry,
    and held the stop past its 9 s. The hello goes unanswered here (one node), and the registry
    is left as it was."""
    app, nc = node
    hub = app[HUB]
    provision(app[REGISTRY], "dev.stop", {}, {})
    provision(app[REGISTRY], "dev.before", {}, {})
    assert (await welcome_for(nc, subjects.up_all("dev.before"), hello("dev.before")))["accepted"]
    await hub.shutdown(0.1)
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await nc.request(subjects.up_all("dev.stop"), hello("dev.stop"), timeout=1.5)
    await nc.publish(subjects.up_all("dev.stop"), wire.encode(wire.make("health", time=time.time(), uptime_s=1.0,
                                                                        restarts=0)))   # no adoption either
    await nc.flush()
    await asyncio.sleep(0.3)
    assert not hub.is_online("dev.stop") and hub.announced("dev.stop") is None
    assert app[REGISTRY].get_device("dev.stop").online is False
