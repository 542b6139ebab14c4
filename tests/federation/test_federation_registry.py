"""The registry: CRUD, restart survival, migrations, hashed tokens, batches, listeners."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from federation.auth import authenticate, bootstrap_admin, create_token, hash_token, provision, Role
from federation.errors import Conflict, NotFound, Unauthorized
from federation.index import SelectionIndex
from federation.registry import INLINE_BUNDLE_LIMIT, Heartbeat, NewTarget, Registry, version_key
from federation.schema import MIGRATIONS, SCHEMA_VERSION, connect, migrate, schema_version
from streamql.selection import Eq, meta


@pytest.fixture
def registry(registry_at):
    """The registry on each backend (SQLite, PostgreSQL): tests/federation/conftest.py."""
    return registry_at()


def _integrity_error(registry) -> type[Exception]:
    if registry.shared:
        import psycopg
        return psycopg.IntegrityError
    return sqlite3.IntegrityError


def test_devices_crud_and_restart(registry_at):
    reg = registry_at()
    provisioned = provision(reg, "wl-1", {"region": "US", "kind": "wheel loader"}, {"ram_kb": 1024})
    provision(reg, "d-7", {"region": "EU", "kind": "dumper"}, {"ram_kb": 256})
    with pytest.raises(Conflict):
        provision(reg, "wl-1")
    reg.update_device("d-7", metadata={"region": "AU", "kind": "dumper"}, health={"cpu": 0.5}, restarts=2)
    reg.set_online("wl-1", True, at=1000.0)
    reg.set_model_version("wl-1", "vib", "1.0.0")
    reg.close()

    reg = registry_at()  # a restart: everything is back
    if reg.shared:   # but the node that held wl-1's link is gone, and shared registries sweep such links
        reg.set_online("wl-1", True, at=1000.0)
    assert [d.id for d in reg.list_devices()] == ["d-7", "wl-1"]
    d7 = reg.get_device("d-7")
    assert d7.metadata == {"region": "AU", "kind": "dumper"} and d7.health == {"cpu": 0.5} and d7.restarts == 2
    wl1 = reg.get_device("wl-1")
    assert wl1.online and wl1.last_seen == 1000.0 and wl1.capabilities == {"ram_kb": 1024}
    assert reg.model_version("wl-1", "vib").version == "1.0.0"
    assert authenticate(reg, provisioned.token).device_id == "wl-1"
    assert reg.list_devices(online=True)[0].id == "wl-1"
    assert reg.device_count() == 2 and reg.device_count(online=True) == 1
    assert reg.get_devices(["wl-1", "nope", "d-7"])[1].id == "d-7"
    assert reg.delete_device("wl-1") and not reg.delete_device("wl-1")
    with pytest.raises(Unauthorized):  # its token went with it
        authenticate(reg, provisioned.token)
    assert reg.model_versions() == {}
    with pytest.raises(NotFound):
        reg.update_device("wl-1", metadata={})
    with pytest.raises(NotFound):
        reg.set_online("wl-1", True)
    reg.close()


def test_opening_an_old_database_migrates_it(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = connect(path)
    assert migrate(conn, target=1) == 1  # a registry as the first release left it
    conn.execute("INSERT INTO devices (id, metadata, capabilities, created, online) VALUES ('e1', '{\"region\": \"US\"}', '{}', 1.0, 1)")
    conn.execute("INSERT INTO tokens (hash, role, label, created) VALUES (?, 'admin', 'old', 1.0)", (hash_token("sqf_" + "a" * 43),))
    conn.close()

    with Registry(path) as reg:
        assert reg.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
        device = reg.get_device("e1")
        assert device.metadata == {"region": "US"} and device.health == {} and device.restarts == 0
        assert authenticate(reg, "sqf_" + "a" * 43).role is Role.ADMIN
        reg.set_model_version("e1", "m", "1")  # tables of later migrations exist
        history = reg._conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [v for (v,) in history] == [m.version for m in MIGRATIONS]


def test_targets_written_before_rollouts_survive_the_rebuild_that_adds_their_new_states(tmp_path):
    path = tmp_path / "v4.sqlite3"
    conn = connect(path)
    assert migrate(conn, target=4) == 4
    conn.execute("INSERT INTO devices (id, created) VALUES ('e1', 1.0)")
    conn.execute("INSERT INTO deployments (action, bundle, created, updated) VALUES ('deploy', 'vib', 1.0, 1.0)")
    conn.execute("INSERT INTO deployment_targets VALUES (1, 'e1', 'failed', 'disk full', 'numpy', 2, 1.0)")
    with pytest.raises(sqlite3.IntegrityError):   # the old table knows no 'installed'
        conn.execute("UPDATE deployment_targets SET state = 'installed'")
    conn.close()
    with Registry(path) as reg:
        (target,) = reg.deployment_targets(1)
        assert (target.state, target.reason, target.variant, target.wave) == ("failed", "disk full", "numpy", 2)
        reg.update_targets(1, [("e1", "installed", None)])
        reg.update_targets(1, [("e1", "rolled_back", "rolled back")])
        assert reg.deployment_target(1, "e1").state == "rolled_back"
        indexes = [row[1] for row in reg._conn.execute("PRAGMA index_list(deployment_targets)")]
        assert "deployment_targets_by_device" in indexes


def test_deployments_and_their_targets_survive_the_rebuild_that_adds_nothing_selected(tmp_path):
    path = tmp_path / "v6.sqlite3"
    conn = connect(path)
    assert migrate(conn, target=6) == 6
    conn.execute("INSERT INTO devices (id, created) VALUES ('e1', 1.0)")
    conn.execute("INSERT INTO deployments (action, bundle, version, created, updated, state, waves) "
                 "VALUES ('deploy', 'vib', '1.0', 1.0, 2.0, 'done', '{\"count\": 1}')")
    conn.execute("INSERT INTO deployment_targets VALUES (1, 'e1', 'done', 'ok', 'numpy', 1, 1.0)")
    with pytest.raises(sqlite3.IntegrityError):   # the old table knows no 'nothing_selected'
        conn.execute("UPDATE deployments SET state = 'nothing_selected'")
    conn.close()
    with Registry(path) as reg:
        (target,) = reg.deployment_targets(1)
        assert (target.state, target.reason, target.variant, target.wave) == ("done", "ok", "numpy", 1)
        deployment = reg.get_deployment(1)
        assert (deployment.state, deployment.version, deployment.waves) == ("done", "1.0", {"count": 1})
        reg.set_deployment_state(1, "nothing_selected")
        assert reg.create_deployment("deploy", "vib", "2.0", "", [("e1",)]).id == 2   # ids go on
        reg.delete_device("e1")   # the reference was rewritten to the new table: the cascade still works
        assert reg.deployment_targets(1) == []
        reg.save_query("cold", "select 1;", description="one", created_by="read#1")
        assert reg.saved_query("cold")["text"] == "select 1;"


def test_migrations_are_ordered_and_a_failing_step_rolls_back(tmp_path):
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    conn = connect(tmp_path / "x.sqlite3")
    migrate(conn, target=1)
    conn.execute("CREATE TABLE bundles (x)")  # makes step 2 fail halfway
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn)
    assert schema_version(conn) == 1
    assert "health" not in [row[1] for row in conn.execute("PRAGMA table_info(devices)")]


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    Registry(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 0, 'from the future')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version"):
        Registry(path)


def test_tokens_are_stored_hashed_never_in_clear(tmp_path):
    path = tmp_path / "registry.sqlite3"
    reg = Registry(path)
    secrets_made = [provision(reg, "e1").token, create_token(reg, Role.READ)[1], bootstrap_admin(reg, tmp_path)]
    reg.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("registry"))
    for token in secrets_made:
        assert token.startswith("sqf_")
        assert token.encode() not in on_disk
        assert hash_token(token).encode() in on_disk


def test_bootstrap_admin_token_once_and_private(tmp_path):
    with Registry(tmp_path / "r.sqlite3") as reg:
        token = bootstrap_admin(reg, tmp_path)
        assert token and bootstrap_admin(reg, tmp_path) is None
        file = tmp_path / "admin.token"
        assert file.read_text().strip() == token
        assert (file.stat().st_mode & 0o777) == 0o600
        assert authenticate(reg, token).role is Role.ADMIN


def test_token_roles_and_revocation(registry):
    record, token = create_token(registry, "deploy", label="ci")
    principal = authenticate(registry, token)
    assert principal.role is Role.DEPLOY and principal.allows(Role.READ) and not principal.allows(Role.ADMIN)
    assert not principal.allows(Role.DEVICE)
    assert [t.label for t in registry.list_tokens()] == ["ci"]
    assert registry.revoke_token(record.id) and not registry.revoke_token(record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        authenticate(registry, token)
    for bad in (None, "", "nope", "sqf_short", "sqf_" + "b" * 43):
        with pytest.raises(Unauthorized):
            authenticate(registry, bad)
    device = provision(registry, "e1")
    caller = authenticate(registry, device.token)
    assert caller.is_device and caller.may_act_as("e1") and not caller.may_act_as("e2")
    assert not caller.allows(Role.READ) and caller.allows(Role.DEVICE)
    assert registry.revoke_device_tokens("e1") == 1


def test_heartbeats_in_one_batch(registry):
    for i in range(1000):
        registry.add_device(f"e{i:04d}", {}, {}, token_hash=hash_token(f"t{i}"))
    beats = [Heartbeat(f"e{i:04d}", 50.0 + i, {"cpu": i / 1000}, i % 3) for i in range(1000)]
    assert registry.record_heartbeats(beats) == 1000
    assert registry.record_heartbeats([]) == 0
    device = registry.get_device("e0999")
    assert device.last_seen == 1049.0 and device.health == {"cpu": 0.999} and device.restarts == 0
    registry.record_heartbeats([Heartbeat("e0999", 2000.0)])  # health and restarts kept
    assert registry.get_device("e0999").health == {"cpu": 0.999}


def test_bundles_inline_and_as_files(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite3")
    small = registry.add_bundle("vib", "1.2.0", b"x" * 100, {"requirements": {"ram_kb": 256}}, uploader="admin#1")
    big_data = os.urandom(INLINE_BUNDLE_LIMIT + 10)
    big = registry.add_bundle("vib", "1.10.0", big_data, {})
    assert small.path is None and big.path is not None and (registry.bundle_dir / big.path).exists()
    assert registry.bundle_data(small) == b"x" * 100 and registry.bundle_data(big) == big_data
    assert registry.add_bundle("vib", "1.2.0", b"x" * 100) == small  # same bytes: no-op
    with pytest.raises(Conflict):
        registry.add_bundle("vib", "1.2.0", b"other")
    assert registry.get_bundle("vib").version == "1.10.0"  # latest by version order, not text
    assert [b.version for b in registry.list_bundles()] == ["1.2.0", "1.10.0"]
    (registry.bundle_dir / big.path).write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        registry.bundle_data(big)
    assert registry.delete_bundle("vib", "1.10.0") and not (registry.bundle_dir / big.path).exists()
    registry.close()


def test_bundles_of_any_size_in_the_database(registry_at):
    if registry_at.backend != "postgres":
        pytest.skip("SQLite keeps large bundles as files (the test above)")
    registry = registry_at()
    small = registry.add_bundle("vib", "1.2.0", b"x" * 100, {"requirements": {"ram_kb": 256}}, uploader="admin#1")
    big_data = os.urandom(INLINE_BUNDLE_LIMIT + 10)
    big = registry.add_bundle("vib", "1.10.0", big_data, {})
    assert small.path is None and big.path is None   # nodes share no file system: bytes in bytea
    assert registry.bundle_data(small) == b"x" * 100 and registry.bundle_data(big) == big_data
    assert registry.add_bundle("vib", "1.2.0", b"x" * 100) == small
    with pytest.raises(Conflict):
        registry.add_bundle("vib", "1.2.0", b"other")
    assert registry.get_bundle("vib").version == "1.10.0" and small.manifest == registry.get_bundle("vib", "1.2.0").manifest
    assert [b.version for b in registry.list_bundles()] == ["1.2.0", "1.10.0"]
    with registry.transaction() as conn:
        conn.execute("UPDATE bundles SET data = 'tampered'::bytea WHERE version = '1.10.0'")
    with pytest.raises(RuntimeError, match="sha256"):
        registry.bundle_data(big)
    assert registry.delete_bundle("vib", "1.10.0") and registry.get_bundle("vib", "1.10.0") is None
    with pytest.raises(NotFound):
        registry.bundle_data(big)


def test_deployments_targets_and_model_versions(registry):
    for name in ("a", "b", "c"):
        provision(registry, name)
    dep = registry.create_deployment("deploy", "vib", "1.2.0", "region(e) = 'US'",
                                     [NewTarget("a"), NewTarget("b", wave=1), ("c", "skipped", "ram_kb 128 < 256")],
                                     waves={"size": 1}, failure_threshold=0.5, created_by="deploy#2")
    assert registry.get_deployment(dep.id) == dep
    assert registry.target_counts(dep.id) == {"pending": 2, "skipped": 1}
    registry.set_deployment_state(dep.id, "running")
    assert [(d.id, t.device_id) for d, t in registry.open_targets_for("a")] == [(dep.id, "a")]
    assert registry.update_targets(dep.id, [("a", "done", None), ("b", "failed", "verification failed")]) == 2
    targets = {t.device_id: t for t in registry.deployment_targets(dep.id)}
    assert targets["b"].reason == "verification failed" and targets["c"].state == "skipped"
    assert registry.open_targets_for("a") == []
    assert registry.deployment_counts() == {"running": 1}
    assert [d.id for d in registry.list_deployments(state="running")] == [dep.id]
    with pytest.raises(_integrity_error(registry)):
        registry.update_targets(dep.id, [("a", "bogus", None)])

    registry.set_model_version("a", "vib", "1.0.0")
    registry.set_model_version("a", "vib", "1.2.0")
    registry.set_model_version("a", "vib", "1.2.0")  # the same again keeps the previous one
    assert registry.model_version("a", "vib").previous_version == "1.0.0"
    assert registry.devices_running("vib", "1.2.0") == ["a"]
    assert registry.rollback_model_version("a", "vib").version == "1.0.0"
    assert registry.rollback_model_version("a", "vib") is None  # nothing further back
    assert registry.remove_model("a", "vib") and registry.model_versions(["a"]) == {}


def test_listeners_and_changes_by_another_process(tmp_path):
    path = tmp_path / "registry.sqlite3"
    reg = Registry(path)
    index = SelectionIndex()
    reg.add_listener(index)
    index.before_select = reg.poll_external_changes
    provision(reg, "e1", {"region": "US"})
    reg.set_online("e1", True)
    assert index.select(Eq(("online",), True)) == ["e1"]
    code = ("import sys; from federation.registry import Registry; from federation.auth import provision;"
            f"provision(Registry({str(path)!r}), 'e2', {{'region': 'US'}})")
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert sorted(index.select(Eq(meta("region"), "US"))) == ["e1", "e2"]
    assert index.select(Eq(("online",), True)) == ["e1"]
    assert not reg.poll_external_changes()  # nothing new since
    create_token(Registry(path), Role.READ)  # another connection's commit that touches no device
    assert not reg.poll_external_changes()
    other = Registry(path)
    other.delete_device("e2")
    provision(other, "e3", {"region": "US"})
    other.close()
    assert sorted(index.select(Eq(meta("region"), "US"))) == ["e1", "e3"]  # a deletion elsewhere: full reset
    assert index.select(Eq(("online",), True)) == ["e1"]
    reg.delete_device("e1")
    assert index.select(Eq(meta("region"), "US")) == ["e3"]
    assert reg.mark_all_offline() == 0
    reg.close()


def test_version_order():
    assert sorted(["1.10.0", "1.9.2", "1.9.10", "2.0.0-rc1", "2.0.0"], key=version_key) == \
        ["1.9.2", "1.9.10", "1.10.0", "2.0.0", "2.0.0-rc1"]


def test_provision_many_in_one_transaction(registry):
    from federation.auth import provision_many

    index = SelectionIndex()
    registry.add_listener(index)
    made = provision_many(registry, [(f"e{i}", {"region": "US" if i % 2 else "EU"}, {"ram_kb": i}) for i in range(100)])
    assert len(made) == 100 and authenticate(registry, made[7][1]).device_id == "e7"
    assert index.count(Eq(meta("region"), "US")) == 50 and registry.device_count() == 100
    with pytest.raises(Conflict):  # one duplicate: none of the batch is stored
        provision_many(registry, [("new", {}, {}), ("e1", {}, {})])
    assert registry.get_device("new") is None and "new" not in index


def test_own_writes_after_another_process_wrote_are_not_mistaken_for_sync(tmp_path):
    path = tmp_path / "registry.sqlite3"
    reg = Registry(path)
    index = SelectionIndex()
    reg.add_listener(index)
    provision(reg, "a", {"k": 1})
    with Registry(path) as other:  # another process adds b, then we add c before polling
        provision(other, "b", {"k": 1})
    provision(reg, "c", {"k": 1})
    assert reg.poll_external_changes()
    assert sorted(index.select(Eq(meta("k"), 1))) == ["a", "b", "c"]
    with Registry(path) as other:  # another process changes a's metadata
        other.update_device("a", metadata={"k": 2})
    assert reg.poll_external_changes() and sorted(index.select(Eq(meta("k"), 1))) == ["b", "c"]
    reg.update_device("b", metadata={"k": 2})  # our own change: in sync, nothing to poll
    assert not reg.poll_external_changes()
    reg.close()
