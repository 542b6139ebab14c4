"""A nats-server secured as a scale-out federation runs it, for the NATS security tests: the
generated security block (federation.nats_config), a node's two connections and its auth service."""
from __future__ import annotations

import contextlib

import nats
import pytest

from federation import nats_subjects
from federation.nats_auth import NatsAuthService
from federation.nats_config import AccountLimits, EdgeQuotas, NatsSecurity, security_block
from federation.registry import Registry
from edge_engine.nats_handshake import finish_slow_authorization
from federation.sessions import Sessions
from tests.nats_servers import NatsServer, nats_server_binary


class Secured:
    """A nats-server with the generated security block and a federation node's auth service."""

    def __init__(self, workdir, registry, sessions, security, *, mqtt=False):
        self.registry, self.sessions, self.security = registry, sessions, security
        self.server = NatsServer(workdir, config=security_block(security), mqtt=mqtt)
        self.service = NatsAuthService(registry, security, sessions=sessions)
        self.node = self.sys = None
        self.clients: list = []

    async def start(self):
        self.server.start()
        self.node = await nats.connect(self.server.url, user=self.security.node_user,
                                       password=self.security.node_password)
        self.sys = await nats.connect(self.server.url, user=self.security.sys_user,
                                      password=self.security.sys_password)
        await self.service.start(self.node, self.sys)
        return self

    async def edge(self, token, device_id, **options):
        """A NATS connection as an edge does it (its token, its inbox prefix), errors collected."""
        errors: list[Exception] = []

        async def on_error(error):
            errors.append(error)

        options.setdefault("allow_reconnect", False)
        options.setdefault("connect_timeout", 3)
        nc = await nats.connect(self.server.url, token=token, error_cb=on_error,
                                inbox_prefix=nats_subjects.inbox_prefix(device_id).encode(), **options)
        await finish_slow_authorization(nc, options["connect_timeout"])   # as the edge's link does
        nc.errors = errors
        self.clients.append(nc)
        return nc

    async def close(self):
        for nc in [*self.clients, self.node, self.sys]:
            if nc is not None and not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()
        await self.service.stop()
        self.server.stop()


@contextlib.asynccontextmanager
async def secured_nats(tmp_path, *, mqtt=False, registry=None, sessions=None, **security_options):
    """A started Secured (small quotas, so that tests reach them), closed at the end; on its own
    registry unless given one (a federation app's, with its Sessions)."""
    nats_server_binary()
    own_registry = registry is None
    registry = Registry(tmp_path / "registry.sqlite3") if own_registry else registry
    security_options.setdefault("quotas", EdgeQuotas(max_payload=64 * 1024, publish_backlog=5,
                                                      publish_record_bytes=1024))
    security = NatsSecurity.generate(limits=AccountLimits(max_file="128M", max_mem="32M"), **security_options)
    setup = Secured(tmp_path / "nats", registry, sessions if sessions is not None else Sessions(), security, mqtt=mqtt)
    await setup.start()
    try:
        yield setup
    finally:
        await setup.close()
        if own_registry:
            registry.close()


@pytest.fixture
async def secured(tmp_path):
    async with secured_nats(tmp_path) as setup:
        yield setup
