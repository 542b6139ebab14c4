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
