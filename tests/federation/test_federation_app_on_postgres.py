"""The federation app's tests (test_federation_app.py) again, with the registry on PostgreSQL:
the service must not care which backend it has. A fresh database of `pg_server` per test."""
from __future__ import annotations

import pytest

from federation.config import FederationConfig
from tests.federation.test_federation_app import *  # noqa: F401,F403  (the same tests, collected here too)


@pytest.fixture
def config(tmp_path, pg_server) -> FederationConfig:
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, max_request_bytes=64 * 1024,
                            registry=pg_server.new_database())
