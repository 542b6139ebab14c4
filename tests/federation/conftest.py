"""Fixtures for the federation tests: a config on a temporary data directory, the app under
pytest-aiohttp's test client, and tokens of every role."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig
from federation.keys import BOOTSTRAP_TOKEN, REGISTRY


@pytest.fixture
def config(tmp_path) -> FederationConfig:
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, max_request_bytes=64 * 1024)


@pytest.fixture
async def client(aiohttp_client, config):
    return await aiohttp_client(create_app(config))


@dataclass
class Tokens:
    admin: str
    deploy: str
    read: str
    device: str  # the token of device "dev-1"

    def header(self, role: str) -> dict:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
async def tokens(client) -> Tokens:
    registry = client.app[REGISTRY]
    device = provision(registry, "dev-1", {"region": "US", "kind": "dumper"}, {"ram_kb": 512})
    return Tokens(admin=client.app[BOOTSTRAP_TOKEN], deploy=create_token(registry, Role.DEPLOY)[1],
                  read=create_token(registry, Role.READ)[1], device=device.token)


class Fleet:
    """Fake edges (federation.testing.FakeEdge) provisioned on the app under test."""

    def __init__(self, client):
        self.client = client
        self.url = str(client.make_url("/")).rstrip("/")
        self.edges: list = []

    @property
    def app(self):
        return self.client.app

    def provision(self, device_id: str, metadata: dict | None = None, capabilities: dict | None = None) -> str:
        return provision(self.app[REGISTRY], device_id, metadata, capabilities).token

    def edge(self, device_id: str, token: str | None = None, *, provisioned: dict | None = None, **kwargs):
        from federation.testing import FakeEdge

        if token is None:
            token = self.provision(device_id, (provisioned or {}).get("metadata"), (provisioned or {}).get("capabilities"))
        edge = FakeEdge(self.url, token, device_id, **kwargs)
        self.edges.append(edge)
        return edge

    async def close(self) -> None:
        for edge in self.edges:
            await edge.shutdown()


@pytest.fixture
async def fleet(client):
    made = Fleet(client)
    yield made
    await made.close()


@pytest.fixture(params=["sqlite", "postgres"])
def registry_at(request, tmp_path):
    """Opens the registry of this test, on each backend in turn: call it again after closing to
    reopen the same one (a restart). The PostgreSQL one is a fresh database of `pg_server`."""
    from federation.registry_interface import open_registry

    if request.param == "sqlite":
        location = str(tmp_path / "registry.sqlite3")
    else:
        location = request.getfixturevalue("pg_server").new_database()
    opened = []

    def open_it(**options):
        registry = open_registry(location, **options)
        opened.append(registry)
        return registry

    open_it.backend = request.param
    open_it.location = location
    yield open_it
    for registry in opened:
        registry.close()
