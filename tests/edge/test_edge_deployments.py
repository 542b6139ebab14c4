"""Deployments: verify → requirements → install atomically → ack, or nack leaving the old version."""
import asyncio
import dataclasses

import pytest

from edge_engine.autostart import autostart_queries
from edge_engine.store import DeploymentState, EdgeStore
from edge_engine.testing import make_bundle
from streamql.models import read_bundle

VERSION = "select m_version(), predict('m', [0, 0, 0, 0]);"


async def version_of(conn):
    """(m_version(), the model's bias) — always from one and the same bundle version."""
    rows, end = await conn.run_query(VERSION)
    if end["outcome"] != "ok":
        return None
    (name, out), = rows
    return name, float(out[1])


@pytest.fixture
def bundles(tmp_path, keys, other_keys):
    key = keys[0]
    return {
        "v1": make_bundle(tmp_path / "b", version="1.0.0", key=key, bias=1.0),
        "v2": make_bundle(tmp_path / "b", version="2.0.0", key=key, bias=2.0),
        "v3": make_bundle(tmp_path / "b", version="3.0.0", key=key, bias=3.0, native=True),
        "foreign": make_bundle(tmp_path / "f", version="9.0.0", key=other_keys[0], bias=9.0),
        "unsigned": make_bundle(tmp_path / "u", version="8.0.0", bias=8.0),
    }


async def test_deploy_in_chunks_any_order_runs_scripts_and_autostart(fed, edge_config, start_edge, bundles):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    data = bundles["v1"]
    pieces = -(-len(data) // 300)
    order = list(reversed(range(pieces))) + [0, 1]           # any order, some chunks twice
    ack = await conn.deploy("d-1", data, "vib", "1.0.0", chunk_bytes=300, order=order[:-2])
    assert ack.t == "ack" and ack["active"] == {"vib": "1.0.0"} and ack["version"] == "1.0.0"
    assert await version_of(conn) == ("1.0.0", 1.0)
    await conn.wait_for(lambda f: f.t == "publish", timeout=5)
    record = fed.published["wl-1"][0]
    assert record["flow"] == "vib/scores" and record["names"] == ["predict('m', w)"]
    assert len(record["rows"][0]) == 2                       # predict on 4-sample windows → 2 outputs
    assert not list((daemon.store.root / "incoming").iterdir())    # chunks cleaned up
    health = await conn.next("health")
    assert health["models"] == {"vib": "1.0.0"} and health["autostart"][0]["status"] == "running"


async def test_upgrade_rollback_and_undeploy(fed, edge_config, start_edge, bundles):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    assert (await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")).t == "ack"
    assert (await conn.deploy("d-2", bundles["v2"], "vib", "2.0.0")).t == "ack"
    assert await version_of(conn) == ("2.0.0", 2.0)           # the new version's functions and model, not a mix
    assert (await conn.deploy("d-3", bundles["v3"], "vib", "3.0.0")).t == "ack"
    assert await version_of(conn) == ("3.0.0", 3.0)
    start = len(conn.frames)
    await conn.send("rollback", did="r-1", model="vib")
    ack = await conn.answer("r-1", start)
    assert ack.t == "ack" and ack["active"] == {"vib": "2.0.0"} and ack["version"] == "2.0.0"
    assert await version_of(conn) == ("2.0.0", 2.0)
    await conn.send("rollback", did="r-2", model="vib", version="1.0.0")
    assert (await conn.answer("r-2", start))["active"] == {"vib": "1.0.0"}
    assert await version_of(conn) == ("1.0.0", 1.0)
    await conn.send("rollback", did="r-3", model="vib")
    nack = await conn.answer("r-3", start)
    assert nack.t == "nack" and nack["code"] == "install" and nack["active"] == {"vib": "1.0.0"}
    await conn.send("rollback", did="r-4", model="nope")
    assert (await conn.answer("r-4", start))["code"] == "unknown_model"
    await conn.send("undeploy", did="u-1", model="vib")
    ack = await conn.answer("u-1", start)
    assert ack.t == "ack" and ack["active"] == {}
    assert (await version_of(conn)) is None                  # m_version() is gone with it
    published = len(fed.published.get("wl-1", []))
    await asyncio.sleep(0.4)
    assert len(fed.published.get("wl-1", [])) <= published + 1     # its autostart query stopped
    assert not daemon.autostarts.queries
    assert list(daemon.store.bundles_dir.iterdir()) == []           # files no state refers to are gone


async def test_a_deployment_already_done_is_acked_again_without_reinstalling(fed, edge_config, start_edge,
                                                                             bundles):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")
    engine = daemon.engine
    again = await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")
    assert again.t == "ack" and again["active"] == {"vib": "1.0.0"} and again["message"] == "already done"
    assert daemon.engine is engine


@pytest.mark.parametrize("which, code, words", [
    ("foreign", "signature", "not trusted"),
    ("unsigned", "signature", "not signed"),
])
async def test_bad_signatures_are_refused_and_the_old_version_stays(fed, edge_config, start_edge, bundles,
                                                                    which, code, words):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")
    version = "9.0.0" if which == "foreign" else "8.0.0"
    nack = await conn.deploy("d-2", bundles[which], "vib", version)
    assert nack.t == "nack" and nack["code"] == code and words in nack["reason"]
    assert nack["active"] == {"vib": "1.0.0"}
    assert await version_of(conn) == ("1.0.0", 1.0)


async def test_tampered_bytes_and_a_wrong_hash_are_refused(fed, edge_config, start_edge, bundles):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    nack = await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0", sha256="0" * 64)
    assert nack["code"] == "hash" and nack["active"] == {}
    tampered = bytearray(bundles["v1"])
    tampered[len(tampered) // 2] ^= 0xFF
    nack = await conn.deploy("d-2", bytes(tampered), "vib", "1.0.0")
    assert nack.t == "nack" and nack["code"] in ("signature", "install")
    nack = await conn.deploy("d-3", bundles["v1"], "other-name", "1.0.0")
    assert nack["code"] == "validate" and "other-name" in nack["reason"]


@pytest.mark.parametrize("requirements, words", [
    ({"ram_kb": 4096}, "RAM"),
    ({"flash_kb": 100000}, "flash"),
    ({"signals": ["vibration", "hydraulic_pressure"]}, "hydraulic_pressure"),
    ({"runtimes": {"tflite": ">=99"}}, "tflite"),
    ({"cpu": "cortex-m4"}, "cortex-m4"),
])
async def test_undeployable_bundles_are_nacked_with_the_reason(fed, edge_config, start_edge, tmp_path, keys,
                                                               requirements, words):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    data = make_bundle(tmp_path, name="big", key=keys[0], requirements=requirements)
    nack = await conn.deploy("d-1", data, "big", "1.0.0")
    assert nack.t == "nack" and nack["code"] == "requirements" and words in nack["reason"]
    assert nack["active"] == {}


async def test_the_bundles_together_must_fit(fed, edge_config, start_edge, tmp_path, keys):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    first = make_bundle(tmp_path, name="a", key=keys[0], requirements={"ram_kb": 600})
    second = make_bundle(tmp_path, name="b", key=keys[0], requirements={"ram_kb": 600}, model="n")
    assert (await conn.deploy("d-1", first, "a", "1.0.0")).t == "ack"
    nack = await conn.deploy("d-2", second, "b", "1.0.0")
    assert nack["code"] == "requirements" and "other deployed bundles" in nack["reason"]
    assert nack["active"] == {"a": "1.0.0"}


@pytest.mark.parametrize("change, code", [
    (dict(tests="validate 'wrong' check predict('m', [1, 2, 3, 4]) => [0.0, 0.0];\n"), "validate"),
    (dict(functions="create function broken( -> ;\n"), "script"),
    (dict(autostart={"autostart/bad.sql": "select stream of nosuch(x) from Real x "
                                          "where x in signal_stream('vibration');\n"}), "script"),
])
async def test_failing_tests_scripts_and_autostart_queries_are_nacked(fed, edge_config, start_edge, tmp_path,
                                                                      keys, bundles, change, code):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")
    data = make_bundle(tmp_path / "x", version="2.0.0", key=keys[0], bias=2.0, **change)
    nack = await conn.deploy("d-2", data, "vib", "2.0.0")
    assert nack.t == "nack" and nack["code"] == code and nack["active"] == {"vib": "1.0.0"}
    assert await version_of(conn) == ("1.0.0", 1.0)


async def test_restart_restores_verified_bundles_and_their_autostart_queries(fed, edge_config, start_edge,
                                                                             bundles, other_keys):
    config = edge_config()
    daemon = await start_edge(config)
    conn = await fed.connection("wl-1")
    await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")
    await conn.deploy("d-2", bundles["v2"], "vib", "2.0.0")
    await daemon.stop()
    daemon = await start_edge(config)
    conn = await fed.connection("wl-1", newer_than=conn)
    assert conn.hello["models"] == {"vib": "2.0.0"} and conn.hello["restarts"] == 1
    assert await version_of(conn) == ("2.0.0", 2.0)
    seen = len(fed.published.get("wl-1", []))
    await conn.wait_for(lambda f: f.t == "publish" and len(fed.published["wl-1"]) > seen + 2, timeout=5)
    start = len(conn.frames)
    await conn.send("rollback", did="r-1", model="vib")              # the history survived too
    assert (await conn.answer("r-1", start))["active"] == {"vib": "1.0.0"}
    await daemon.stop()
    # signatures are checked again: an edge that no longer trusts the signer does not run it
    daemon = await start_edge(dataclasses.replace(config, trusted_keys=[other_keys[1]]))
    conn = await fed.connection("wl-1", newer_than=conn)
    assert conn.hello["models"] == {}
    health = await conn.next("health", start=0)
    assert any("not restored" in e["message"] and "not trusted" in e["message"] for e in health["errors"])


async def test_a_damaged_state_file_is_kept_aside_and_the_edge_starts_clean(fed, edge_config, start_edge,
                                                                            bundles):
    config = edge_config()
    daemon = await start_edge(config)
    conn = await fed.connection("wl-1")
    await conn.deploy("d-1", bundles["v1"], "vib", "1.0.0")
    await daemon.stop()
    state = daemon.store.state_path
    state.write_bytes(state.read_bytes().replace(b"1.0.0", b"1.0.1"))    # a bit flipped on disk
    await start_edge(config)
    conn = await fed.connection("wl-1", newer_than=conn)
    assert conn.hello["models"] == {}
    assert list(state.parent.glob("deployments.damaged-*.json"))


def test_state_switch_is_one_file_and_history_is_bounded(tmp_path):
    from edge_engine.store import BundleVersion
    store = EdgeStore(tmp_path)
    state = DeploymentState()
    for i in range(6):
        state = state.with_active("b", BundleVersion(f"{i}.0", f"{i:064x}"))
    assert state.bundles["b"].active.version == "5.0"
    assert [v.version for v in state.bundles["b"].history] == ["2.0", "3.0", "4.0"]
    store.save_state(state)
    assert store.load_state().bundles["b"].history == state.bundles["b"].history
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []    # no temporary left


def test_flows_of_autostart_queries(tmp_path):
    data = make_bundle(tmp_path, autostart={
        "autostart/scores.sql": "select stream of x from Real x where x in signal_stream('vibration');",
        "autostart/many.sql": "//publish: alerts\nselect stream of 1 from Real x where x in signal_stream('vibration');\n"
                              "select stream of 2 from Real x where x in signal_stream('vibration');\n"
                              "-- publish: none\nselect stream of 3 from Real x where x in signal_stream('vibration');\n"})
    specs = autostart_queries(read_bundle(data))
    assert [(s.path, s.index, s.flow) for s in specs] == [
        ("autostart/many.sql", 1, "alerts"), ("autostart/many.sql", 2, "vib/many/2"),
        ("autostart/many.sql", 3, None), ("autostart/scores.sql", 1, "vib/scores")]


async def test_lying_chunk_counts_and_sizes_are_refused(fed, edge_config, start_edge, bundles):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.send("deploy", did="d-1", model="vib", version="1.0.0", sha256="0" * 64, size=10, chunk=0,
                    chunks=1000, data=b"x")
    assert (await conn.answer("d-1"))["code"] == "validate"
    await conn.send("deploy", did="d-2", model="vib", version="1.0.0", sha256="0" * 64, size=10, chunk=0,
                    chunks=2, data=b"x" * 10)
    await conn.send("deploy", did="d-2", model="vib", version="1.0.0", sha256="0" * 64, size=10, chunk=1,
                    chunks=2, data=b"y" * 5)
    assert (await conn.answer("d-2"))["code"] == "hash"
    for i in range(12):          # deployments never completed: only the newest few are kept
        await conn.send("deploy", did=f"p-{i}", model="vib", version="1.0.0", sha256="0" * 64, size=10,
                        chunk=0, chunks=2, data=b"z")
    ack = await conn.deploy("d-3", bundles["v1"], "vib", "1.0.0")
    assert ack.t == "ack" and len(list((daemon.store.root / "incoming").iterdir())) <= 8


async def test_a_failing_autostart_query_is_retried_and_reported(fed, edge_config, start_edge, tmp_path, keys):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    # a signal the edge does not have is refused before anything changes …
    unknown = make_bundle(tmp_path / "u", name="p", key=keys[0], requirements={}, autostart={
        "autostart/pressure.sql": "select stream of x from Real x where x in signal_stream('pressure');\n"})
    nack = await conn.deploy("d-0", unknown, "p", "1.0.0")
    assert nack.t == "nack" and nack["code"] == "script" and "no signal named 'pressure'" in nack["reason"]
    # … a query that fails only when it runs is retried, and reported
    data = make_bundle(tmp_path, name="p", key=keys[0], requirements={}, autostart={
        "autostart/pressure.sql": "select stream of w[3] from Vector of Real w "
                                  "where w in winagg(signal_stream('vibration'), 2, 2);\n"})
    assert (await conn.deploy("d-1", data, "p", "1.0.0")).t == "ack"       # it compiles; it fails when it runs
    health = await conn.wait_for(lambda f: f.t == "health" and f["autostart"]
                                 and f["autostart"][0]["status"] == "failed", timeout=5)
    assert "3" in health["autostart"][0]["error"] and health["autostart"][0]["flow"] == "p/pressure"
    assert any("autostart query" in e["message"] and "restarting" in e["message"] for e in health["errors"])
    await asyncio.sleep(1.3)
    assert daemon.autostarts.queries[0].restarts >= 1                      # retried with backoff


async def test_an_ack_names_what_to_watch_and_health_follows_each_status_change(edge_config, start_edge,
                                                                                 tmp_path, keys):
    # a heartbeat far away: every health frame seen here was pushed by a deployment or a status change
    from edge_engine.testing import FakeFederation
    quiet = FakeFederation(heartbeat_s=60.0)
    await quiet.start()
    try:
        await start_edge(dataclasses.replace(edge_config(), federation=quiet.url, heartbeat_s=60.0))
        conn = await quiet.connection("wl-1")
        await conn.wait_for(lambda f: f.t == "health", timeout=5)      # the first beat, at connect
        start = len(conn.frames)
        data = make_bundle(tmp_path, name="bad", key=keys[0], requirements={}, autostart={
            "autostart/third.sql": "select stream of w[3] from Vector of Real w "
                                   "where w in winagg(signal_stream('vibration'), 2, 2);\n"})
        ack = await conn.deploy("d-1", data, "bad", "1.0.0")
        assert ack.t == "ack" and ack["autostart"] == ["bad:autostart/third.sql#1"] and ack["loaded"] == {"m": "1.0.0"}
        # the window has two elements: w[3] fails when the first one comes, and the edge says so at once
        failed = await conn.wait_for(lambda f: f.t == "health" and any(
            q["query"] == "bad:autostart/third.sql#1" and q["status"] == "failed" for q in f["autostart"]),
            timeout=5, start=start)
        assert failed["loaded"] == {"m": "1.0.0"} and failed["models"] == {"bad": "1.0.0"}
        entry = next(q for q in failed["autostart"] if q["query"] == "bad:autostart/third.sql#1")
        assert entry["bundle"] == "bad" and "3" in entry["error"]
        pushed = [f for f in conn.frames[start:] if f.t == "health"]
        # right after the ack, and when the query failed — one frame when the failure came within
        # the 0.1 s that changes share (daemon.health_soon), as on a loaded box
        assert len(pushed) >= 2 or pushed == [failed], pushed
    finally:
        await quiet.stop()


async def test_autostart_queries_run_under_the_edges_memory_limit(fed, edge_config, start_edge, tmp_path, keys):
    """An autostart query gets the edge's statement memory budget (limits.memory_mb), like a
    fragment: a value past it is refused before it is built, and the query is reported failed."""
    from edge_engine.daemon import autostart_limits
    config = edge_config()
    config = dataclasses.replace(config, limits=dataclasses.replace(config.limits, memory_mb=16))
    assert autostart_limits(config.limits) == {"memory_mb": 16}
    daemon = await start_edge(config)
    conn = await fed.connection("wl-1")
    data = make_bundle(tmp_path, name="big", key=keys[0], requirements={}, autostart={   # 32 MB a reading
        "autostart/big.sql": "select stream of sum(zeros(4000000)) + x from Real x "
                             "where x in signal_stream('vibration');\n"})
    assert (await conn.deploy("d-1", data, "big", "1.0.0")).t == "ack"
    health = await conn.wait_for(lambda f: f.t == "health" and f["autostart"]
                                 and f["autostart"][0]["status"] == "failed", timeout=10)
    assert "LimitError" in health["autostart"][0]["error"] and "16" in health["autostart"][0]["error"]
    assert daemon.autostarts.queries[0].rows == 0
