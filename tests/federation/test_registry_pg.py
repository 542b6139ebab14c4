"""The registry on PostgreSQL as several federation nodes use it: each other's changes, migrations
started at once, one rollout controller at a time, a restarted server. A real PostgreSQL on
loopback (tests/pg_server.py); the suites shared with SQLite are in test_federation_registry.py."""
from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from federation.auth import Role, authenticate, create_token, provision
from federation.errors import Unauthorized
from federation.index import SelectionIndex
from federation.registry import Registry
from federation.registry_interface import RegistryBackend, open_registry
from federation.heartbeats import HeartbeatBuffer
from federation.records import Heartbeat
from federation.registry_pg import PgRegistry
from federation.registry_pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION, pg_migrate
from streamql.selection import Eq, meta


@pytest.fixture
def database(pg_server) -> str:
    return pg_server.new_database()


@pytest.fixture
def nodes(database):
    """Two registries on one database, as two federation nodes would open it."""
    opened = [PgRegistry(database), PgRegistry(database)]
    yield opened
    for registry in opened:
        registry.close()


def _interface_methods() -> set[str]:
    return {name for name in dir(RegistryBackend) if not name.startswith("_")} - {"shared", "clock"}


def test_both_backends_have_every_method_of_the_interface(tmp_path, database):
    names = _interface_methods()
    assert len(names) > 50
    for cls in (Registry, PgRegistry):
        missing = sorted(n for n in names if not callable(getattr(cls, n, None)) and n != "schema_version")
        assert missing == [], f"{cls.__name__} lacks {missing}"
    with open_registry(tmp_path / "r.sqlite3") as sqlite, open_registry(database, follow=False) as pg:
        assert isinstance(sqlite, RegistryBackend) and isinstance(pg, RegistryBackend)
        assert not sqlite.shared and pg.shared and pg.schema_version == PG_SCHEMA_VERSION


def _wait_until(condition, registry: PgRegistry, timeout: float = 1.0) -> float:
    """Poll the way the app does when woken; seconds it took (fails past the timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        registry.poll_external_changes()
        if condition():
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"not seen within {timeout} s")


def test_each_node_sees_the_others_changes_within_a_second(nodes):
    a, b = nodes
    index_b = SelectionIndex()
    b.add_listener(index_b)
    woken: list[str] = []
    b.watch(woken.append)
    us = Eq(meta("region"), "US")

    device = provision(a, "e1", {"region": "US"})                  # added on A
    _wait_until(lambda: index_b.select(us) == ["e1"], b)
    a.update_device("e1", metadata={"region": "EU"})               # changed on A
    _wait_until(lambda: index_b.select(us) == [], b)
    a.set_online("e1", True)                                       # an edge connected to A
    _wait_until(lambda: index_b.online_count() == 1, b)
    a.delete_device("e1")                                          # removed on A
    _wait_until(lambda: "e1" not in index_b, b)
    assert "devices" in woken

    record, token = create_token(b, Role.READ)                     # token revoked on B: A refuses it
    assert authenticate(a, token).role is Role.READ
    assert b.revoke_token(record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        authenticate(a, token)
    assert a.revoked_among([record.id]) == {record.id}
    _wait_until(lambda: "tokens" in woken, b)

    woken.clear()                                                  # deployment state: a wake-up and the row
    provision(a, "e2")
    dep = a.create_deployment("deploy", "vib", "1.0.0", "", [("e2",)], state="running")
    a.update_deployment(dep.id, state="done")
    _wait_until(lambda: "deployments" in woken and b.get_deployment(dep.id).state == "done", b)
    # a node's own changes are not fed back to it (its listeners heard them already, once)
    heard: list[str] = []

    class Recorder:
        def device_changed(self, device):
            heard.append(device.id)

        def device_removed(self, device_id):
            heard.append(f"-{device_id}")

        def online_changed(self, device_ids, online):
            heard.extend(f"{'+' if online else '_'}{d}" for d in device_ids)

        def reset(self, devices):
            pass

    a.add_listener(Recorder())
    provision(a, "e3", {"region": "US"})
    a.set_online("e3", True)
    _wait_until(lambda: index_b.online_count() == 1 and "e3" in index_b, b)   # the feed has them by now
    a._watcher.dirty.set()
    assert a.poll_external_changes() is False
    assert heard == ["e3", "+e3"]


def test_many_changes_at_once_and_a_node_far_behind(nodes):
    a, b = nodes
    index_b = SelectionIndex()
    b.add_listener(index_b)
    a.add_devices([(f"d{i:05d}", {"n": i % 7}, {}, f"hash{i}") for i in range(3000)])
    _wait_until(lambda: len(index_b) == 3000, b, timeout=5)
    assert index_b.count(Eq(meta("n"), 3)) == len([i for i in range(3000) if i % 7 == 3])
    # entries pruned past what B has read: B reloads every device instead of missing some
    with a.transaction() as conn:
        conn.execute("DELETE FROM devices WHERE id < 'd00100'")
        conn.execute("UPDATE registry_counters SET value = (SELECT max(seq) FROM device_changes) "
                      "WHERE name = 'changes_pruned_through'")
        conn.execute("DELETE FROM device_changes")
    a.update_device("d02999", metadata={"n": 100})
    _wait_until(lambda: len(index_b) == 2900 and index_b.select(Eq(meta("n"), 100)) == ["d02999"], b)


def test_migrations_started_at_once_apply_once(database):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start_node() -> None:
        try:
            with psycopg.connect(database, autocommit=True) as conn:
                barrier.wait()
                pg_migrate(conn)
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start_node) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with psycopg.connect(database) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM registry_migrations ORDER BY version")]
        assert applied == [m.version for m in PG_MIGRATIONS]
        assert pg_migrate(conn) == PG_SCHEMA_VERSION   # again: nothing to do


def test_a_failing_migration_leaves_nothing_and_a_newer_database_is_refused(database, monkeypatch):
    from federation import registry_pg_schema as schema

    broken = schema.PgMigration(PG_SCHEMA_VERSION + 1, "broken", ("CREATE TABLE half_done (x int)", "SELECT 1/0"))
    monkeypatch.setattr(schema, "PG_MIGRATIONS", (*PG_MIGRATIONS, broken))
    monkeypatch.setattr(schema, "PG_SCHEMA_VERSION", PG_SCHEMA_VERSION + 1)
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            schema.pg_migrate(conn)
        assert conn.execute("SELECT to_regclass('half_done'), to_regclass('devices')").fetchone() == (None, None)
    monkeypatch.undo()
    with psycopg.connect(database, autocommit=True) as conn:
        assert pg_migrate(conn) == PG_SCHEMA_VERSION
        conn.execute("INSERT INTO registry_migrations (version, description) VALUES (%s, 'from the future')",
                     (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="knows up to"):
        PgRegistry(database)


def test_one_rollout_controller_and_a_takeover_when_it_dies(nodes, database):
    a, b = nodes
    provision(a, "e1")
    dep = a.create_deployment("deploy", "vib", "1.0.0", "", [("e1",)], state="running")
    assert a.holds_deployment(dep.id)                 # its creator drives it
    assert not b.claim_deployment(dep.id)             # the other node may not
    assert a.claim_deployment(dep.id)                 # claiming again what we hold is fine
    # A's link to the database dies (the node crashed, a network cut): the server lets go
    with psycopg.connect(database, autocommit=True) as admin:
        pid = a._locks._conn.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    while not b.claim_deployment(dep.id):
        assert time.monotonic() < deadline, "the lock was not freed with its connection"
        time.sleep(0.05)
    assert b.holds_deployment(dep.id)
    assert not a.holds_deployment(dep.id)             # A notices and stops driving
    assert not a.claim_deployment(dep.id)             # and cannot take it back while B lives
    b.release_deployment(dep.id)
    assert a.claim_deployment(dep.id)


async def test_two_deployment_managers_only_one_drives_and_the_other_takes_over(nodes):
    import asyncio

    from federation.deployments import DeploymentManager

    class NoEdges:   # the managers' hub: nobody is connected, so the rollout just waits
        def online_ids(self):
            return set()

        def spawn(self, coro, name=None):
            import asyncio
            return asyncio.get_running_loop().create_task(coro, name=name)

    a, b = nodes
    provision(a, "e1")
    a.set_model_version("e1", "vib", "1.0.0")   # so the rollback has a target (offline: it waits)
    first, second = DeploymentManager(a, NoEdges()), DeploymentManager(b, NoEdges())
    did = int(await first.start("rollback", "vib", None, ["e1"], selection="", waves=1))  # needs no bundle
    await asyncio.sleep(0.3)
    assert list(first.running()) == [did] and a.get_deployment(did).state == "running"
    assert await second.take_over() == 0 and list(second.running()) == []
    a._locks._drop()                                   # first's database link dies
    assert await second.take_over() == 1 and list(second.running()) == [did]
    await first.take_over()
    assert list(first.running()) == []                 # it stopped driving
    await first.close()
    await second.close()


def test_offline_at_start_keeps_live_nodes_edges_and_sweeps_dead_ones(nodes, database):
    a, b = nodes
    for name in ("e1", "e2", "e3"):
        provision(a, name)
    a.set_online("e1", True)
    b.set_online("e2", True)
    c = PgRegistry(database)        # a third node starting: it must not mark A's and B's edges offline
    try:
        assert c.mark_all_offline() == 0
        assert {d.id for d in c.list_devices(online=True)} == {"e1", "e2"}
    finally:
        c.close()
    a._watcher.stop()               # A dies: its node lock goes with its watcher connection
    time.sleep(0.2)
    assert b.mark_dead_nodes_offline() == 1
    assert {d.id for d in b.list_devices(online=True)} == {"e2"}


class _OnlineHeard:
    """A registry listener that keeps what it was told about online states."""

    def __init__(self):
        self.online: dict[str, bool] = {}

    def reset(self, devices):
        self.online = {d.id: d.online for d in devices}

    def device_changed(self, device):
        self.online[device.id] = device.online

    def device_removed(self, device_id):
        self.online.pop(device_id, None)

    def online_changed(self, ids, online):
        self.online.update(dict.fromkeys(ids, online))


def test_an_edge_the_survivor_serves_too_stays_online_when_the_named_node_dies(nodes):
    """On NATS every node serves the edge: the dead node's name is replaced, the edge stays online;
    what only the dead node served goes offline, and the sweeping node's own listeners hear it."""
    a, b = nodes
    for name in ("shared", "only-a", "gone"):
        provision(a, name)
    heard = _OnlineHeard()
    b.add_listener(heard)
    b.set_online("shared", True)
    b.set_online("gone", True)
    b.set_online("gone", False)     # left B: the sweep must not bring it back under B's name
    a.set_online("shared", True)    # the registry names A, the last to say welcome
    a.set_online("only-a", True)
    a.set_online("gone", True)
    b.poll_external_changes()
    assert heard.online == {"shared": True, "only-a": True, "gone": True}
    a._watcher.stop()               # A dies
    time.sleep(0.2)
    assert b.mark_dead_nodes_offline() == 2
    assert {d.id for d in b.list_devices(online=True)} == {"shared"}
    with psycopg.connect(b.conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT online_node FROM devices WHERE id = 'shared'").fetchone()[0] == b.node_key
    b._watcher.dirty.set()          # the watcher's NOTIFY would do it; no waiting on its thread here
    b.poll_external_changes()
    assert heard.online == {"shared": True, "only-a": False, "gone": False}


def test_heartbeats_another_node_wrote_reach_this_nodes_listeners_once(nodes):
    a, b = nodes
    for name in ("on-a", "on-b"):
        provision(a, name)
    heard: list[Heartbeat] = []
    b.add_listener(type("Beats", (_OnlineHeard,), {"heartbeats_recorded": lambda self, beats: heard.extend(beats)})())
    a.set_online("on-a", True)
    b.set_online("on-b", True)      # B hears this one itself: nothing to read back
    now = time.time()
    a.record_heartbeats([Heartbeat("on-a", now, {"battery": 15.0}, 2), Heartbeat("on-b", now, {"battery": 1.0}, 0)])
    assert b.poll_heartbeats() == 1
    assert heard == [Heartbeat("on-a", now, {"battery": 15.0}, 2)]
    assert b.poll_heartbeats() == 0       # nothing new
    a.record_heartbeats([Heartbeat("on-a", now - 1.0, {"battery": 14.0}, 2)])   # older than the one passed on
    a.record_heartbeats([Heartbeat("on-a", now + 2.0, {"battery": 14.5}, 3)])
    assert b.poll_heartbeats() == 1 and heard[-1] == Heartbeat("on-a", now + 2.0, {"battery": 14.5}, 3)


def test_a_heartbeat_flush_of_many_edges_costs_about_what_its_rows_do(nodes):
    """The change-feed trigger looks at every row of an UPDATE: heartbeats of 20,000 edges took about
    a minute when it joined old and new rows in a nested loop (quadratic), under a second by hash
    (the bound leaves room for a loaded machine)."""
    a, _ = nodes
    ids = [f"hb-{i:05d}" for i in range(20_000)]
    a.add_devices((i, {"region": "US"}, {}, f"hash-{i}") for i in ids)
    now = time.time()
    started = time.perf_counter()
    assert a.record_heartbeats([Heartbeat(i, now, {"battery": 50.0}, 0) for i in ids]) == len(ids)
    assert time.perf_counter() - started < 20.0


async def test_the_heartbeat_flush_waits_in_a_thread_and_listeners_hear_on_the_loop(nodes):
    a, _ = nodes
    ids = [f"hb-{i:05d}" for i in range(8000)]
    a.add_devices((i, {}, {}, f"hash-{i}") for i in ids)
    heard_on: set[int] = set()
    a.add_listener(type("Beats", (_OnlineHeard,), {
        "heartbeats_recorded": lambda self, beats: heard_on.add(threading.get_ident())})())
    buffer = HeartbeatBuffer(a)
    now = time.time()
    for i in ids:
        buffer.add(Heartbeat(i, now, {"battery": 50.0}, 0))
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    written = await buffer.flush_off_loop()
    during = ticks
    ticker.cancel()
    assert written == len(ids) and len(buffer) == 0
    assert during > 1, "the event loop ran nothing while the heartbeats were written"
    assert heard_on == {threading.get_ident()}
    assert a.get_device(ids[-1]).health == {"battery": 50.0}


def test_a_restarted_server_costs_errors_while_down_and_nothing_after(pg_server, nodes):
    a, b = nodes
    index_b = SelectionIndex()
    b.add_listener(index_b)
    provision(a, "before", {"k": 1})
    _wait_until(lambda: "before" in index_b, b)
    pg_server.restart()
    deadline = time.monotonic() + 20
    while True:   # the pool checks connections: after at most an error or two, calls work again
        try:
            provision(a, "after", {"k": 2})
            break
        except (psycopg.Error, Exception):
            assert time.monotonic() < deadline, "the registry did not reconnect"
            time.sleep(0.2)
    assert a.get_device("before") is not None
    # B's watcher reconnected too, and reads the feed from where it was
    _wait_until(lambda: "after" in index_b, b, timeout=15)


def test_the_administration_commands_take_the_registry_url_or_a_config_file(database, tmp_path, capsys):
    from federation.cli import main

    assert main(["provision", "--registry", database, "--id", "wl-1", "--meta", "region=US"]) == 0
    token = capsys.readouterr().out.strip()
    config = tmp_path / "node.toml"
    config.write_text(f'registry = "{database}"\n')
    assert main(["token", "create", "--config", str(config), "--role", "read", "--label", "ci"]) == 0
    read = capsys.readouterr().out.strip()
    with PgRegistry(database, watch=False) as registry:
        assert authenticate(registry, token).device_id == "wl-1"
        assert authenticate(registry, read).role is Role.READ
        assert registry.get_device("wl-1").metadata == {"region": "US"}
    assert not (tmp_path / "registry.sqlite3").exists()
    config.write_text('registry = "postgresql://nobody@127.0.0.1:1/none"\n')
    with pytest.raises(SystemExit, match="cannot open the registry"):
        main(["token", "list", "--config", str(config)])
    with pytest.raises(SystemExit, match="cannot open the registry"):   # serving: said at once, not a silent exit
        main(["--data", str(tmp_path / "d"), "--config", str(config), "--port", "0"])
    config.write_text('registy = "typo"\n')
    with pytest.raises(SystemExit, match="unknown setting 'registy'"):
        main(["token", "list", "--config", str(config)])


def test_metadata_by_sql_answers_like_an_oracle_from_its_indexes(database):
    regions = ["US", "EU", "SE", "AU"]
    with PgRegistry(database, watch=False) as registry:
        registry.add_devices([(f"d{i}", {"region": regions[i % 4], "kind": "dumper" if i % 3 else "drill"},
                               {}, f"h{i}") for i in range(2000)])
        want = sorted(f"d{i}" for i in range(2000) if i % 4 == 2 and i % 3 == 0)
        assert registry.devices_matching({"region": "SE", "kind": "drill"}) == want
        with registry.transaction() as conn:
            conn.execute("ANALYZE devices")
            conn.execute("SET LOCAL enable_seqscan = off")   # a tiny table: show the planner can use them
            plan = " ".join(r[0] for r in conn.execute(
                """EXPLAIN SELECT id FROM devices WHERE metadata @> '{"region": "SE"}'"""))
            assert "devices_metadata" in plan
            plan = " ".join(r[0] for r in conn.execute("EXPLAIN SELECT id FROM devices WHERE metadata ->> 'region' = 'SE'"))
            assert "devices_region" in plan


def test_a_pooled_connection_is_checked_only_once_it_has_idled(database, monkeypatch):
    """The pool's check is a round trip to the server: done for a connection idle in the pool for
    CHECK_IDLE_S, not for one back from a call just now (a check per call was 7 % of a busy node)."""
    import federation.registry_pg_pool as pool

    with PgRegistry(database, watch=False) as registry:
        idle = registry._idle_check
        registry.get_device("nothing")
        before = idle.checks
        for _ in range(20):
            registry.get_device("nothing")
        assert idle.checks - before <= 2      # (a stall of the box past CHECK_IDLE_S may cost one)
        monkeypatch.setattr(pool, "CHECK_IDLE_S", 0.0)   # every connection counts as idle
        before = idle.checks
        for _ in range(5):
            registry.get_device("nothing")
        assert idle.checks - before == 5
