"""Fixtures for the edge daemon tests: a fake federation, signing keys, configurations, daemons."""
from __future__ import annotations

import argparse
import dataclasses
import logging

import pytest

from edge_engine.config import load_config
from edge_engine.daemon import EdgeDaemon
from edge_engine.testing import FakeFederation, make_keys

logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

VIBRATION = "name=vibration,shape=sine,rate_hz=200,noise=0.1,seed=3"
TEMPERATURE = "name=outside_temperature,shape=walk,rate_hz=20,offset=-25,amplitude=3,seed=4"


@pytest.fixture
async def fed():
    federation = FakeFederation(heartbeat_s=0.5)
    await federation.start()
    yield federation
    await federation.stop()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """(private key path, public key path) of the key the edges trust."""
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture
def edge_config(tmp_path, fed, keys):
    """`edge_config(**overrides)`: an EdgeConfig for edge wl-1 on the fake federation."""
    def make(**overrides):
        args = argparse.Namespace(
            id="wl-1", federation=fed.url, store=str(tmp_path / "store"), token="device-token",
            signal=[VIBRATION, TEMPERATURE], trusted_key=[keys[1]], ram_kb=1024, flash_kb=8192,
            cpu="cortex-a53", meta=["kind=wheel loader", "region=US"], heartbeat_s=0.5,
            reconnect_initial_s=0.05, reconnect_max_s=0.3, log_level="info")
        config = load_config(None, args)
        buffer = overrides.pop("buffer", None)
        if buffer:
            config = dataclasses.replace(config, buffer=dataclasses.replace(config.buffer, **buffer))
        return dataclasses.replace(config, **overrides)
    return make


@pytest.fixture
async def start_edge():
    """`await start_edge(config, **options)`: a running EdgeDaemon, stopped after the test."""
    daemons = []

    async def start(config, **options):
        daemon = await EdgeDaemon(config, **options).start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.stop()
