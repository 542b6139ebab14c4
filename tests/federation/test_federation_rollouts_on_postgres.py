"""The rollout tests (test_federation_rollouts.py) again, with the registry on PostgreSQL: waves,
aborts and rollbacks must not depend on the backend. A fresh database of `pg_server` per test."""
from __future__ import annotations

import pytest

from federation.config import FederationConfig
from tests.federation.test_federation_rollouts import *  # noqa: F401,F403  (the same tests, collected here too)


@pytest.fixture
def config(tmp_path, keys, pg_server) -> FederationConfig:
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=5.0, deploy_settle_s=0.3, max_request_bytes=64 * 1024,
                            registry=pg_server.new_database())
