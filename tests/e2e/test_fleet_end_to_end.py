"""The federation and real edge daemons as processes (issue 7's integration tests): the
motivating query returns exactly the rows an oracle computes from the simulated signals; a
deployment to the equipment in the US reaches exactly those devices; rollback restores the
previous version everywhere; wrong or missing tokens are refused."""
from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import streamql
from edge_engine.simulate import fleet_identities
from edge_engine.simulation import SimModel

from demo_process import EDGES, SEED

pytestmark = pytest.mark.timeout(300)

MOTIVATING = """select stream of id(e), w
from Edge e, Vector of Real w
where region(e) in ('US', 'EU', 'AU')
  and kind(e) in ('wheel loader', 'dumper')
  and signal_value('outside_temperature')@e < -20
  and w in winagg(signal_stream('vibration'), 256, 256)@e;"""


def identities():
    return {i.id: i for i in fleet_identities(EDGES, SEED)}


def model(identity, signal: str) -> SimModel:
    spec = next(s for s in identity.signals if s["name"] == signal)
    return SimModel.from_spec({k: v for k, v in spec.items() if k not in ("name", "kind")})


def oracle_devices(now: float, margin: float = 0.5, motivating: bool = True,
                   within: tuple[float, float] = (-5.0, 30.0)) -> tuple[set, set]:
    """(devices that must answer, devices too close to -20 °C to be sure either way); only wheel
    loaders and dumpers in the US, EU and AU unless not `motivating`. A device reads its
    temperature when its fragment starts, some seconds after `now`, and a regional level shift can
    move it 3 °C at once: it is sure only if cold at every reading in `now + within`."""
    sure, unsure = set(), set()
    for edge_id, identity in identities().items():
        meta = identity.metadata
        if motivating and (meta["region"] not in ("US", "EU", "AU") or meta["kind"] not in ("wheel loader", "dumper")):
            continue
        temperature = model(identity, "outside_temperature")
        times = np.arange(math.floor(now + within[0]), math.ceil(now + within[1]) + 1, dtype=np.float64)
        readings = temperature.values_at(times)
        if readings.max() < -20 - margin:
            sure.add(edge_id)
        elif readings.min() < -20 + margin:
            unsure.add(edge_id)
    return sure, unsure


def test_the_motivating_query_returns_exactly_the_oracle_rows(demo):
    fleet = streamql.connect(demo.url, demo.read_token)
    started = time.time()
    must, maybe = oracle_devices(started)
    assert must, "the simulated fleet should have cold wheel loaders or dumpers in the US, EU or AU"
    result = fleet.query(MOTIVATING)
    windows: dict[str, list] = {}
    deadline = time.monotonic() + 60
    for edge_id, window in result:
        windows.setdefault(edge_id, []).append(np.asarray(window))
        if all(len(windows.get(d, [])) >= 2 for d in must) or time.monotonic() > deadline:
            break
    result.close()
    assert set(windows) - maybe == must, (sorted(windows), sorted(must), sorted(maybe))
    # every window is 256 consecutive readings of that device's simulated vibration, exactly
    now = time.time()
    for edge_id, found in windows.items():
        vibration = model(identities()[edge_id], "vibration")
        times = vibration.grid(int((now - started + 20) * vibration.rate_hz), started - 10)
        series = vibration.values_at(times)
        for window in found:
            assert window.shape == (256,)
            starts = np.flatnonzero(series == window[0])
            assert any(np.array_equal(series[i:i + 256], window) for i in starts), \
                f"a window from {edge_id} is not a run of its simulated vibration"


def test_metadata_queries_match_the_registry_and_the_simulation(demo):
    fleet = streamql.connect(demo.url, demo.read_token)
    rows = sorted(fleet.query("select id(e), region(e), kind(e), capability(e, 'ram_kb') from Edge e;"))
    expected = sorted((i.id, i.metadata["region"], i.metadata["kind"], i.capabilities.ram_kb)
                      for i in identities().values())
    assert rows == expected
    counts = dict(fleet.query("select region(e), count(e) from Edge e group by region(e);"))
    assert counts == {r: sum(1 for i in identities().values() if i.metadata["region"] == r) for r in counts}

    # monitoring: every simulated edge is online, seen within its heartbeat, and reports its health
    now = time.time()
    rows = list(fleet.query("select id(e), online(e), last_seen(e), health(e) from Edge e;"))
    assert {r[0] for r in rows} == set(identities())
    for edge_id, online, last_seen, health in rows:
        assert online is True, edge_id
        assert now - 30 < last_seen.seconds <= now + 1, (edge_id, last_seen)
        assert health["uptime_s"] > 0 and health["restarts"] >= 0 and "link" in health, health


def _deploy(fleet, statement: str) -> dict:
    result = fleet.query(statement)
    list(result)
    assert result.deployment_id, statement
    return fleet.wait_deployment(result.deployment_id, 120)


def _versions(fleet) -> dict:
    return dict(fleet.query("select id(e), model_version(e, 'vib-anomaly') from Edge e;"))


def test_a_deployment_to_the_equipment_in_the_us_reaches_exactly_those(demo):
    fleet = streamql.connect(demo.url, demo.admin)
    us = {d for d, i in identities().items() if i.metadata["region"] == "US"}
    progress = _deploy(fleet, "deploy model 'vib-anomaly' version '1.1.0' to Edge e where region(e) = 'US';")
    assert {d["id"] for d in progress["devices"]} == us
    assert all(d["state"] == "done" for d in progress["devices"]), progress["devices"]
    versions = _versions(fleet)
    assert {d for d, v in versions.items() if v == "1.1.0"} == us
    assert all(versions[d] is None for d in versions if d not in us)
    # the deployed function runs on exactly those devices (they announced it in their acks);
    # elsewhere it does not exist, so nothing is sent there: those devices are skipped, saying why
    scores = fleet.query("select id(e), s from Edge e, Real s "
                         "where s in vectorof(first_n(vib_anomaly_level(), 1))@e;")
    rows = list(scores)
    assert {edge_id for edge_id, _ in rows} == us and all(isinstance(s, float) for _, s in rows)
    skipped = {d for d, s in scores.status.items() if s["outcome"] == "skipped"}
    assert skipped == set(identities()) - us
    assert all("unknown function vib_anomaly_level" in scores.status[d]["reason"] for d in skipped)
    assert not scores.complete and scores.status.counts == {"answered": len(us), "skipped": len(skipped)}


def test_rollback_restores_the_previous_version_everywhere(demo):
    fleet = streamql.connect(demo.url, demo.admin)
    everyone = set(identities())
    _deploy(fleet, "deploy model 'vib-anomaly' version '1.1.0' to Edge e;")
    _deploy(fleet, "deploy model 'vib-anomaly' version '1.2.0' to Edge e;")
    assert set(_versions(fleet).values()) == {"1.2.0"}
    progress = _deploy(fleet, "rollback model 'vib-anomaly' on Edge e;")
    assert {d["id"] for d in progress["devices"] if d["state"] == "done"} == everyone
    assert set(_versions(fleet).values()) == {"1.1.0"}


def _status(url: str, token: str | None, path: str = "/v1/query", body: dict | None = None) -> int:
    data = json.dumps(body or {"query": "select id(e) from Edge e;"}).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data=data, headers=headers), timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_wrong_or_missing_tokens_are_refused(demo):
    assert _status(demo.url, None) == 401
    assert _status(demo.url, "sqf_not-a-token") == 401
    assert _status(demo.url, demo.read_token) == 200
    deploy = {"query": "deploy model 'vib-anomaly' version '1.2.0' to Edge e where region(e) = 'US';"}
    assert _status(demo.url, demo.read_token, body=deploy) == 403
    assert _status(demo.url, demo.read_token, "/v1/edges", {"id": "intruder", "metadata": {}}) == 403
    tokens = json.loads((demo.data / "edges" / "tokens.json").read_text())
    device_token = next(iter(tokens.values())) if isinstance(tokens, dict) else tokens[0]["token"]
    assert _status(demo.url, device_token) == 403


def test_a_deployment_selected_by_live_state_reaches_the_devices_where_it_holds(demo):
    # the temperature condition is evaluated on each device, at the time of the deployment
    fleet = streamql.connect(demo.url, demo.admin)
    started = time.time()
    must, maybe = oracle_devices(started, margin=1.0, motivating=False)
    assert must and set(identities()) - must - maybe, "the fleet should have both cold and warm devices"
    progress = _deploy(fleet, "deploy model 'vib-anomaly' version '1.2.0' to Edge e "
                              "where signal_value('outside_temperature')@e < -20;")
    reached = {d["id"] for d in progress["devices"]}
    assert must <= reached <= must | maybe, (sorted(reached), sorted(must), sorted(maybe))
    assert all(d["state"] == "done" for d in progress["devices"]), progress["devices"]
    versions = _versions(fleet)
    assert {d for d, v in versions.items() if v == "1.2.0"} == reached
