"""The deployment tests (test_federation_deployments.py) again, with the registry on PostgreSQL:
rollouts, acks, health, resumes after a restart. A fresh database of `pg_server` per test."""
from __future__ import annotations

import pytest

from federation.config import FederationConfig
from tests.federation.test_federation_deployments import *  # noqa: F401,F403  (the same tests, collected here too)


@pytest.fixture
def config(tmp_path, keys, pg_server) -> FederationConfig:
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=1.0, max_bundle_bytes=4 << 20, max_request_bytes=64 * 1024,
                            registry=pg_server.new_database())
