"""The deployments to hundreds of edges (test_federation_deploy_many.py) again, with the registry on
PostgreSQL: the same batched writes, counts and resumes. A fresh database of `pg_server` per test."""
from __future__ import annotations

import pytest

from federation.config import FederationConfig
from tests.federation.test_federation_deploy_many import *  # noqa: F401,F403  (the same tests, collected here too)
from tests.federation.test_federation_deploy_many import CONCURRENCY


@pytest.fixture
def config(tmp_path, keys, pg_server) -> FederationConfig:
    return FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]],
                            deploy_ack_timeout_s=60.0, deploy_concurrency=CONCURRENCY, max_bundle_bytes=4 << 20,
                            max_request_bytes=64 * 1024, registry=pg_server.new_database())
