"""Staged rollouts on real processes: a `streamql federation` and nine simulated edges (`streamql
edge --simulate 9`, each a full edge daemon). A bundle whose autostart query fails on its first
data, deployed `over 3 waves abort above 10 percent rollback on abort`, stops after the first
wave: those devices go back to the version they ran, the others are never sent anything. A good
bundle goes through every wave. A device that is offline does not hold its wave past the timeout."""
from __future__ import annotations

import time

import pytest

from fleet_process import Fleet

pytestmark = pytest.mark.timeout(300)

EDGES = 9
OFFLINE = "aa-offline"    # provisioned before the fleet: the first device the registry lists
GOOD = "select stream of x from Real x where x in signal_stream('vibration') and x > 1e9;\n"
# windows of two readings: w[3] is out of range when the first window comes (a run-time error)
BAD = "select stream of w[3] from Vector of Real w where w in winagg(signal_stream('vibration'), 2, 2);\n"


@pytest.fixture(scope="module", params=["websocket", "nats", "scale-out"])
def fleet(request, tmp_path_factory):
    running = Fleet(tmp_path_factory.mktemp(f"rollouts-{request.param}"), EDGES, offline=[OFFLINE],
                    federation_args=["--deploy-settle", "1"], transport=request.param)
    try:
        yield running
    finally:
        running.stop()


def test_a_bad_bundle_stops_after_the_first_wave_and_is_rolled_back(fleet):
    fleet.upload("canary", "1.0.0", GOOD)
    fleet.upload("canary", "2.0.0", BAD)
    where = f"where id(e) != '{OFFLINE}'"
    assert fleet.deploy(f"deploy model 'canary' version '1.0.0' to Edge e {where} over 1 waves;")["state"] == "done"
    assert set(fleet.running("canary").values()) == {"1.0.0"}

    progress = fleet.deploy(f"deploy model 'canary' version '2.0.0' to Edge e {where} "
                            "over 3 waves abort above 10 percent rollback on abort;")
    assert progress["state"] == "aborted", progress
    waves = progress["waves"]
    assert waves["sizes"] == [3, 3, 3] and [w["state"] for w in waves["list"]] == ["aborted", "skipped", "skipped"]
    by_wave: dict[int, list] = {}
    for device in progress["devices"]:
        by_wave.setdefault(device["wave"], []).append(device)
    # the first wave installed it, saw its autostart query fail, and went back to 1.0.0
    for device in by_wave[1]:
        assert device["state"] == "rolled_back", device
        assert "autostart query canary:autostart/canary.sql#1 failed" in device["reason"], device
        assert device["reason"].endswith("rolled back to 1.0.0"), device
    # the others were never sent anything
    for device in by_wave[2] + by_wave[3]:
        assert device["state"] == "skipped" and "rollout aborted after wave 1" in device["reason"], device
    assert progress["abort"]["rollback"] == "done" and progress["abort"]["rolled_back"] == 3
    assert "3 of 3 devices failed, more than 10 percent" in progress["abort"]["reason"]
    assert set(fleet.running("canary").values()) == {"1.0.0"}      # every device's own engine says so
    versions = dict(fleet.client.query("select id(e), model_version(e, 'canary') from Edge e where online(e);"))
    assert set(versions.values()) == {"1.0.0"}


def test_a_good_bundle_goes_through_every_wave(fleet):
    fleet.upload("probe", "1.0.0", GOOD)
    started = time.monotonic()
    progress = fleet.deploy(f"deploy model 'probe' to Edge e where id(e) != '{OFFLINE}' "
                            "over 3 waves abort above 10 percent;")
    assert progress["state"] == "done" and progress["counts"]["done"] == EDGES, progress
    assert [w["state"] for w in progress["waves"]["list"]] == ["done"] * 3
    assert all(w["failed_share"] == 0.0 and w["done"] == 3 for w in progress["waves"]["list"])
    assert time.monotonic() - started >= 3          # three waves, each waiting for its devices to settle
    assert set(fleet.running("probe").values()) == {"1.0.0"}


def test_an_offline_device_does_not_hold_its_wave_past_the_timeout(fleet):
    fleet.upload("late", "1.0.0", GOOD)
    started = time.monotonic()
    result = fleet.client.query(f"deploy model 'late' to Edge e where id(e) in ('{OFFLINE}', '{fleet.online[0]}') "
                                "over waves of 1 wave timeout 4 seconds;")
    list(result)
    progress = fleet.client.wait_deployment(result.deployment_id, 60)
    elapsed = time.monotonic() - started
    assert progress["settled"] and progress["state"] == "running" and progress["waiting_for_offline"] == 1, progress
    first = progress["waves"]["list"][0]
    states = {d["id"]: d["state"] for d in progress["devices"]}
    assert states == {OFFLINE: "pending", fleet.online[0]: "done"}
    # the offline device comes first (by registration and by id): its wave waited out its timeout, then
    # went on, finishing nobody (so nothing to abort), and the next wave went
    assert first["offline"] == [OFFLINE] and first["devices"] == 1 and first["failed_share"] is None, first
    assert 4 <= elapsed < 20, elapsed
    assert first["state"] == "done" and progress["waves"]["list"][1]["state"] == "done"
    assert fleet.running("late")[fleet.online[0]] == "1.0.0"


def test_a_bundle_uploaded_on_one_node_is_deployed_by_the_other(fleet):
    """Scale-out: nodes share no file system; the bundle's bytes live in PostgreSQL, so node B deploys
    what node A was given, and node A sees the deployment B made."""
    if getattr(fleet, "infra", None) is None:
        pytest.skip("the scale-out configuration only (two nodes)")
    import streamql

    fleet.upload("crossnode", "1.0.0", GOOD)
    on_b = streamql.connect(fleet.url_b, fleet.admin)
    result = on_b.query(f"deploy model 'crossnode' to Edge e where id(e) != '{OFFLINE}' over 1 waves;")
    list(result)
    assert result.deployment_id
    progress = on_b.wait_deployment(result.deployment_id, 120)
    assert progress["state"] == "done" and progress["counts"]["done"] == EDGES, progress
    assert fleet.client.wait_deployment(result.deployment_id, 30)["state"] == "done"
    assert set(fleet.running("crossnode").values()) == {"1.0.0"}
