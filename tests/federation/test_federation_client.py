"""The Python client and `streamql query` against a real federation on 127.0.0.1 (in a thread, so
the blocking client can be called from the test), with a fake query service and fake edges;
TLS end to end with a private CA."""
from __future__ import annotations

import asyncio
import json
import ssl
import threading

import numpy as np
import pytest
from aiohttp import web

import streamql
from federation.app import create_app
from federation.auth import Role, create_token, provision
from federation.config import FederationConfig
from federation.keys import BOOTSTRAP_TOKEN, DEPLOYMENTS, QUERY_SERVICE, REGISTRY
from federation.testing import FakeEdge, make_bundle
from federation.tls import ssl_context_for
from streamql import Time
from streamql.cli import main as cli_main
from streamql.client import FederationRequestError, FederationUnavailable
from streamql.errors import QueryNameError, QueryParseError, QueryRuntimeError
from streamql.models import keygen
from tests.federation.fake_service import DEPLOY, FAILING, ROWS, SLOW_FIRST, STREAM, UNKNOWN, WIDE, FakeService
from tests.federation.test_federation_tls import make_cert

pytestmark = pytest.mark.timeout(60)


class Served:
    """A federation app served on 127.0.0.1 by its own event loop in a thread."""

    def __init__(self, config: FederationConfig, service=None):
        self.config, self.service = config, service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url = self.call(self._start())

    def call(self, coro, timeout: float = 20):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> str:
        self.app = create_app(self.config)
        if self.service is not None:
            self.app[QUERY_SERVICE] = self.service
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context_for(self.config))
        await site.start()
        port = self.runner.addresses[0][1]
        return f"{'https' if self.config.tls else 'http'}://127.0.0.1:{port}"

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture
def served(tmp_path, keys):
    service = FakeService()
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, trusted_keys=[keys[1]])
    fed = Served(config, service)
    registry = fed.app[REGISTRY]
    fed.tokens = {"admin": fed.app[BOOTSTRAP_TOKEN], "read": create_token(registry, Role.READ)[1],
                  "deploy": create_token(registry, Role.DEPLOY)[1]}
    yield fed
    fed.stop()


def test_query_rows_keep_their_types_and_the_status_comes_after(served):
    fleet = streamql.connect(served.url, served.tokens["read"])
    result = fleet.query(WIDE)
    assert result.columns == ["id(e)", "w", "t"] and result.kind == "bag" and result.status is None
    assert result.types == ["Charstring", "Vector of Real", "Time"]
    first = next(result)
    assert first[0] == "wl-1" and isinstance(first[1], np.ndarray) and first[1].dtype == np.float64
    assert np.isnan(first[1][1]) and isinstance(first[2], Time) and first[2].seconds == 0.5
    rest = list(result)
    assert rest[0][1].dtype == np.float32 and rest[0][2] is None
    assert result.status["wl-3"] == {"outcome": "offline", "rows": 0, "reason": "not connected"}
    assert [row for row in fleet.query(ROWS)] == [1, 2, 3]  # one column: plain values
    assert list(fleet.query(ROWS, format="ndjson")) == [1, 2, 3]
    plain = list(fleet.query(WIDE, format="ndjson"))
    assert plain[0] == ("wl-1", [1.0, None, 2.5], "1970-01-01T00:00:00.5Z")


def test_errors_are_query_errors_with_positions(served):
    fleet = streamql.connect(served.url, served.tokens["read"])
    with pytest.raises(QueryParseError) as caught:
        fleet.query("select 1\n  + ;")
    assert (caught.value.line, caught.value.column) == (2, 5) and "^" in caught.value.excerpt
    with pytest.raises(QueryNameError) as caught:
        fleet.query(UNKNOWN)
    assert (caught.value.line, caught.value.column) == (1, 8) and caught.value.status == 400
    with pytest.raises(FederationRequestError) as caught:
        fleet.query(DEPLOY)  # a read token
    assert caught.value.kind == "Forbidden" and caught.value.status == 403
    with pytest.raises(FederationRequestError) as caught:
        streamql.connect(served.url, "sqf_" + "x" * 43).query(ROWS)
    assert caught.value.status == 401
    result = fleet.query(FAILING)
    assert next(result) == 1.0 and next(result) == 2.0
    with pytest.raises(QueryRuntimeError) as caught:
        next(result)
    assert caught.value.line == 1 and caught.value.status_by_device["e1"]["outcome"] == "failed"
    assert result.status["e1"]["reason"] == "division by zero"
    with pytest.raises(FederationUnavailable):
        streamql.connect("http://127.0.0.1:9", "t").query(ROWS)  # nothing listens there
    with pytest.raises(ValueError):
        streamql.connect("ftp://x", "t")


def test_closing_a_result_cancels_the_statement(served):
    fleet = streamql.connect(served.url, served.tokens["read"])
    result = fleet.query(STREAM)
    assert result.kind == "stream"
    got = [next(result) for _ in range(3)]
    assert got == [1.0, 2.0, 3.0]
    result.close()
    stream = served.service.results[-1]
    served.call(_until(lambda: stream.closed))


def test_closing_from_another_thread_wakes_a_reader_that_waits_for_a_row(served):
    # the shell's Ctrl-C: one thread waits for a row that does not come, another closes the result
    from streamql.errors import QueryCancelled
    fleet = streamql.connect(served.url, served.tokens["read"])
    result = fleet.query(SLOW_FIRST)                   # one row, then nothing until the gate opens
    assert next(result) == 1
    outcome: list = []

    def read():
        try:
            outcome.append(next(result))
        except BaseException as exc:  # noqa: BLE001 - what the reader saw is the point
            outcome.append(exc)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive()                           # blocked in the read
    closer = threading.Thread(target=result.close, daemon=True)
    closer.start()
    closer.join(2.0)
    assert not closer.is_alive(), "close() waited for the blocked reader"
    reader.join(2.0)
    assert not reader.is_alive() and isinstance(outcome[0], QueryCancelled), outcome
    stream = served.service.results[-1]
    served.call(_until(lambda: stream.closed))         # the federation stopped the statement
    with pytest.raises(QueryCancelled):
        next(result)
    result.close()                                     # again: nothing happens


def test_abandoned_async_iteration_leaves_nothing_open(served):
    import gc
    import warnings
    fleet = streamql.connect(served.url, served.tokens["read"])

    async def run():
        async for _ in fleet.aquery(STREAM):            # break
            break
        with pytest.raises(KeyError):                   # an exception in the loop's body
            async for _ in fleet.aquery(STREAM):
                raise KeyError("boom")

        async def consume():                            # the task cancelled while it waits for a row
            async for _ in fleet.aquery(SLOW_FIRST):
                pass
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()
        await asyncio.sleep(0.1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(run())
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    streams = [r for r in served.service.results if r.kind == "stream"]
    assert len(streams) == 3
    served.call(_until(lambda: all(r.closed for r in streams)))   # every statement stopped on the federation


async def _until(predicate, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_aquery_is_an_async_iterator(served):
    fleet = streamql.connect(served.url, served.tokens["read"])

    async def run():
        result = fleet.aquery(WIDE)
        rows = [row async for row in result]
        assert result.columns == ["id(e)", "w", "t"] and result.status["wl-1"]["outcome"] == "answered"
        with pytest.raises(QueryNameError):
            async for _ in fleet.aquery(UNKNOWN):
                pass
        async with fleet.aquery(STREAM) as stream:
            first = await stream.__anext__()
        return rows, first

    rows, first = asyncio.run(run())
    assert rows[0][0] == "wl-1" and rows[1][1].dtype == np.float32 and first == 1.0


def test_execute_runs_a_script_statement_by_statement(served):
    fleet = streamql.connect(served.url, served.tokens["deploy"])
    results = fleet.execute(f"{ROWS}\n{DEPLOY}")
    assert results[0].rows == [1, 2, 3] and list(results[0]) == [1, 2, 3]
    assert results[1].kind == "deployment" and results[1].deployment_id == "7" and results[1].message == "deploy started"
    with pytest.raises(QueryNameError) as caught:
        fleet.execute(f"{ROWS}\n   {UNKNOWN}")  # the error positioned in the whole script
    assert (caught.value.line, caught.value.column) == (2, 11)
    assert caught.value.source.startswith(ROWS)


def test_the_fleet_edges_models_and_deployments(served, tmp_path, keys):
    admin = streamql.connect(served.url, served.tokens["admin"])
    made = admin.provision("wl-1", {"region": "EU", "kind": "dumper"}, {"ram_kb": 1024})
    admin.provision("wl-2", {"region": "US"})
    assert made["token"].startswith("sqf_")
    deployer = streamql.connect(served.url, served.tokens["deploy"])
    assert [e["id"] for e in deployer.edges(region="EU")] == ["wl-1"]
    assert [e["id"] for e in deployer.edges(region=["EU", "US"])] == ["wl-1", "wl-2"]
    assert deployer.edges(online=True) == [] and deployer.edge("wl-2")["metadata"] == {"region": "US"}
    data = make_bundle(tmp_path / "b", "vib", "1.0.0", private_key=keys[0])
    uploaded = deployer.upload_model(data)
    assert uploaded["created"] and deployer.models()[0]["version"] == "1.0.0"
    edge = FakeEdge(served.url, made["token"], "wl-1", capabilities={"runtimes": {"numpy": "2"}})
    served.call(edge.connect())
    try:
        did = served.call(served.app[DEPLOYMENTS].start("deploy", "vib", None, ["wl-1", "wl-2"], selection="true"))
        progress = deployer.wait_deployment(did, timeout=10)
        assert progress["settled"] and progress["counts"]["done"] == 1 and progress["waiting_for_offline"] == 1
        assert deployer.deployment(did)["devices"][0]["id"] == "wl-1"
        assert deployer.deployments()[0]["id"] == did
        assert "streamql_edges_online 1" in deployer.metrics()
    finally:
        served.call(edge.shutdown())


def test_streamql_query_prints_rows_then_the_status(served, capsys, tmp_path):
    base = ["query", "--federation", served.url, "--token", served.tokens["read"]]
    assert cli_main([*base, WIDE]) == 4     # wl-3 did not answer: an incomplete answer
    out, err = capsys.readouterr()
    assert out.splitlines() == ["wl-1\t[1.0, null, 2.5]\t1970-01-01T00:00:00.5Z", "wl-2\t[0.0, 1.0, 2.0]\tnull"]
    assert err.splitlines()[0] == "2 answered · 1 offline (wl-3) · 0 failed · partial answer"
    assert "wl-3  offline" in err and "not connected" in err and "wl-1" not in err
    assert cli_main([*base, "--format", "json", ROWS]) == 0
    assert capsys.readouterr().out.splitlines() == ["[1]", "[2]", "[3]"]
    assert cli_main([*base, UNKNOWN]) == 1
    assert "NameError at line 1, column 8" in capsys.readouterr().err
    assert cli_main([*base, DEPLOY]) == 3  # refused: a read token
    assert "Forbidden" in capsys.readouterr().err
    script = tmp_path / "s.sql"
    script.write_text(f"{ROWS}\n{ROWS}\n")
    assert cli_main([*base, "-q", "-f", str(script)]) == 0
    assert capsys.readouterr().out.splitlines() == ["1", "2", "3", "1", "2", "3"]
    assert cli_main([*base]) == 2


def test_tokens_come_from_a_file_or_the_environment_not_only_argv(served, capsys, tmp_path, monkeypatch):
    secret = tmp_path / "read.token"
    secret.write_text(served.tokens["read"] + "\n")
    assert cli_main(["query", "--federation", served.url, "--token-file", str(secret), "--format", "json", ROWS]) == 0
    assert capsys.readouterr().out.splitlines() == ["[1]", "[2]", "[3]"]
    monkeypatch.setenv("STREAMQL_TOKEN", served.tokens["read"])
    assert cli_main(["query", "--federation", served.url, "-q", ROWS]) == 0
    assert capsys.readouterr().out.splitlines() == ["1", "2", "3"]
    assert cli_main(["query", "--federation", served.url, "--token-file", str(tmp_path / "missing"), ROWS]) == 2
    assert "cannot read the token file" in capsys.readouterr().err


def test_the_admin_token_is_never_taken_from_argv(tmp_path, capsys, monkeypatch):
    from edge_engine.cli import main as edge_main

    common = ["--simulate", "2", "--federation", "http://127.0.0.1:9", "--store", str(tmp_path / "s")]
    assert edge_main([*common, "--provision", "sqf_the_admin_token"]) == 2
    message = capsys.readouterr().err
    assert "visible" in message and "--provision-token-file" in message and "STREAMQL_ADMIN_TOKEN" in message
    monkeypatch.delenv("STREAMQL_ADMIN_TOKEN", raising=False)
    assert edge_main([*common, "--provision"]) == 2
    assert "needs the admin token" in capsys.readouterr().err


def test_tls_end_to_end_with_a_private_ca(tmp_path):
    ca_cert, ca_key, ca_path, _ = make_cert(tmp_path / "ca", "test CA", ca=True)
    _, _, cert, key = make_cert(tmp_path / "server", "127.0.0.1", issuer=(ca_cert, ca_key))
    config = FederationConfig(data_dir=tmp_path / "fed", announce=False, tls_cert=cert, tls_key=key)
    fed = Served(config, FakeService())
    try:
        assert fed.url.startswith("https://")
        token = create_token(fed.app[REGISTRY], Role.READ)[1]
        fleet = streamql.connect(fed.url, token, ca_file=ca_path)
        assert list(fleet.query(ROWS)) == [1, 2, 3]
        assert asyncio.run(fleet.aquery(ROWS).fetchall()) == [1, 2, 3]
        with pytest.raises(FederationUnavailable, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            streamql.connect(fed.url, token).query(ROWS)  # the private CA is not trusted by default
        assert list(streamql.connect(fed.url, token, verify=False).query(ROWS)) == [1, 2, 3]
        # an edge over wss:// trusting the same CA
        device_token = provision(fed.app[REGISTRY], "e1").token
        edge = FakeEdge(fed.url, device_token, "e1", ssl=ssl.create_default_context(cafile=str(ca_path)))
        welcome = fed.call(edge.connect())
        assert welcome["accepted"] and fed.app[REGISTRY].get_device("e1").online
        fed.call(edge.shutdown())
        assert json.loads(json.dumps(fleet.edges()))[0]["id"] == "e1"
    finally:
        fed.stop()


def test_what_the_shell_asks_of_the_client(served):
    admin = streamql.connect(served.url, served.tokens["admin"])
    admin.provision("wl-1", {"region": "EU", "kind": "dumper"}, {"signals": ["vibration"]})
    assert admin.metadata_keys() == ["kind", "region"] and admin.signals() == ["vibration"]
    names = {f["name"]: f for f in admin.functions()}      # the real list: tests/fleet/test_fleet_processes.py
    assert "winagg" in names and names["winagg"]["signature"]
    registry = served.app[REGISTRY]
    from federation.registry import NewTarget
    deployment = registry.create_deployment("deploy", "vib", "1.0.0", "true", [NewTarget("wl-1", "skipped", "no")])
    registry.update_deployment(deployment.id, state="done")
    records = list(admin.deployment_progress(deployment.id, poll=0.01, timeout=5))
    assert records[-1]["complete"] and records[-1]["devices"] == {"wl-1": {"state": "skipped", "reason": "no"}}
    from streamql.shell.federation import FederationSession
    session = FederationSession(admin, served.url)
    assert session.metadata_keys() == ["kind", "region"] and "vibration" in session.signals()
    assert list(session.run(ROWS)) == [1, 2, 3]
