"""A three-server NATS cluster configured by `streamql federation nats-config` (the real command):
a callout-authenticated edge whose server is killed reconnects to another server, authorized again
by the federation node (whose own connection failed over too), still confined to its subjects."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import nats

from federation import nats_subjects
from federation.auth import provision
from federation.nats_auth import NatsAuthService, node_connect_options
from federation.nats_config import NatsSecurity
from federation.registry import Registry
from federation.sessions import Sessions
from tests.nats_servers import NatsServer, free_port, nats_server_binary


def _cluster_from_the_command(tmp_path, size=3):
    data = tmp_path / "fed"
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]   # client, route, monitor
    servers = []
    for index, (port, route, monitor) in enumerate(ports):
        others = [f"127.0.0.1:{r}" for i, (_, r, _) in enumerate(ports) if i != index]
        command = [sys.executable, "-m", "streamql.cli", "federation", "nats-config", "--data", str(data),
                   "--name", f"n{index}", "--listen", f"127.0.0.1:{port}", "--cluster-listen", f"127.0.0.1:{route}",
                   "--monitor-listen", f"127.0.0.1:{monitor}", "--store-dir", str(tmp_path / f"js{index}")]
        for other in others:
            command += ["--route", other]
        text = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
        # the account limits are sized for real machines; this test's servers get small stores
        text = text.replace("max_file: 10G, max_mem: 1G", "max_file: 64M, max_mem: 16M")
        text = text.replace(f'jetstream {{ store_dir: "{tmp_path / f"js{index}"}" }}',
                            f'jetstream {{ store_dir: "{tmp_path / f"js{index}"}", max_memory_store: 32MB, '
                            f'max_file_store: 128MB }}')
        servers.append(NatsServer(tmp_path / "nats", name=f"n{index}", port=port, http_port=monitor, full_config=text))
    return data, servers


async def test_an_edge_reconnects_through_another_server_and_is_authorized_again(tmp_path):
    nats_server_binary()
    data, servers = _cluster_from_the_command(tmp_path)
    for server in servers:
        server.start(wait=False)
    registry = Registry(tmp_path / "registry.sqlite3")
    clients = []
    service = None
    try:
        for server in servers:
            server.wait_ready()
        security = NatsSecurity.load_or_create(data)
        urls = [server.url for server in servers]
        # the node is connected to server 2 (it fails over too, but must not have to here)
        node = await nats.connect([urls[2], urls[1]], dont_randomize=True, **node_connect_options(security))
        clients.append(node)
        service = NatsAuthService(registry, security, sessions=Sessions())
        await service.connect([urls[2], urls[1]], dont_randomize=True)
        device = provision(registry, "e1")
        reconnected = asyncio.Event()
        errors = []

        async def on_reconnect():
            reconnected.set()

        async def on_error(error):
            errors.append(str(error))

        edge = await nats.connect(urls, token=device.token, dont_randomize=True, reconnected_cb=on_reconnect,
                                  error_cb=on_error, reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                                  inbox_prefix=nats_subjects.inbox_prefix("e1").encode())
        clients.append(edge)
        assert edge.connected_url.port == servers[0].port and service.granted == 1
        got = []

        async def collect(msg):
            got.append(msg.data)

        await node.subscribe("sql.up.e1.all", cb=collect)
        await node.flush()
        for _ in range(300):                           # until the interest has crossed the routes
            await edge.publish(nats_subjects.up_all("e1"), b"probe")
            await asyncio.sleep(0.05)
            if b"probe" in got:
                break
        got.clear()
        await edge.publish(nats_subjects.up_all("e1"), b"before")
        await edge.flush()
        for _ in range(300):                           # delivered before the kill (at most once)
            if b"before" in got:
                break
            await asyncio.sleep(0.05)
        servers[0].kill()
        await asyncio.wait_for(reconnected.wait(), 15)
        assert edge.connected_url.port in (servers[1].port, servers[2].port)
        assert service.granted == 2                    # the new server asked the federation again
        await edge.publish(nats_subjects.up_all("e1"), b"after")
        await edge.publish(nats_subjects.up_all("e2"), b"forged")
        await edge.flush()
        for _ in range(100):
            if len(got) >= 2 and errors:
                break
            await asyncio.sleep(0.05)
        assert [m for m in got if m != b"probe"] == [b"before", b"after"]
        assert any("permissions violation" in e for e in errors), errors
    finally:
        if service is not None:
            await service.close()
        for nc in clients:
            if not nc.is_closed:
                await nc.close()
        for server in servers:
            server.stop()
        registry.close()
