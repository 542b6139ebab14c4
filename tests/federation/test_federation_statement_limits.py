"""The federation's statements run under its operator's limits and files rule: per-role limits
that are defaults and ceilings at once (`--query-limits read:memory_mb=…`), the same for
statements that are not queries (`set`, `validate`), and no files unless `--files DIR`."""
from __future__ import annotations

import argparse
import json

import pytest

from federation.cli import register
from federation.config import FederationConfig, parse_query_limits

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(tmp_path) -> FederationConfig:
    files = tmp_path / "files"
    files.mkdir()
    (files / "r.csv").write_text("1,2\n")
    return FederationConfig(data_dir=tmp_path / "fed", announce=False,
                            query_role_limits={"read": {"memory_mb": 16, "seconds": 30}}, files_dir=files)


async def run(client, tokens, role: str, statement: str, **limits) -> tuple[int, list]:
    body = {"query": statement, **({"limits": limits} if limits else {})}
    resp = await client.post("/v1/query", json=body, headers=tokens.header(role))
    text = await resp.text()
    return resp.status, [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_a_read_token_gets_its_roles_limits_and_cannot_raise_them(client, tokens):
    status, lines = await run(client, tokens, "read", "select dim(zeros(4000000));")          # 32 MB
    assert status == 400 and lines[0]["error"]["kind"] == "LimitError"
    assert "memory limit of 16 MB" in lines[0]["error"]["message"]
    status, lines = await run(client, tokens, "read", "select dim(zeros(4000000));", memory_mb=1000)
    assert status == 400 and "memory limit of 16 MB" in lines[0]["error"]["message"]
    status, lines = await run(client, tokens, "read", "select dim(zeros(1000000));", memory_mb=4)    # less: yes
    assert status == 400 and "memory limit of 4 MB" in lines[0]["error"]["message"]
    status, lines = await run(client, tokens, "admin", "select dim(zeros(4000000));")         # 256 MB by default
    assert status == 200 and lines[0] == [4000000]


async def test_statements_that_are_not_queries_run_under_limits_too(client, tokens):
    status, lines = await run(client, tokens, "deploy", "set :v = zeros(100000000);")
    assert status == 400 and lines[0]["error"]["kind"] == "LimitError"
    status, lines = await run(client, tokens, "admin", "validate 'v' check count(iota(1, 1000000000000)) => 1;",
                              seconds=0.5)
    assert status == 400 and lines[0]["error"]["kind"] == "LimitError" and "time limit" in lines[0]["error"]["message"]


async def test_statements_read_only_the_files_directory(client, tokens, config):
    status, lines = await run(client, tokens, "read", "select vectorof(csv:file_stream('r.csv'));")
    assert status == 200 and lines[0] == [[[1, 2]]]
    for path in ("/etc/passwd", "../fed/registry.sqlite3"):
        status, lines = await run(client, tokens, "read", f"select vectorof(csv:file_stream('{path}'));")
        assert status == 400 and "reads only files inside" in lines[0]["error"]["message"]
    status, lines = await run(client, tokens, "admin", "create model m from '/etc/passwd';")
    assert status == 400 and "reads only files inside" in lines[0]["error"]["message"]


def test_the_command_line_gives_the_files_directory_and_role_limits(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["federation", "--data", str(tmp_path), "--files", str(tmp_path / "f"),
                              "--query-limits", "read:memory_mb=64,seconds=30", "--query-limits", "admin:rows=5"])
    config = FederationConfig.from_args(args)
    assert config.files_dir == tmp_path / "f"
    assert config.query_limits("read") == {"rows": None, "seconds": 30.0, "memory_mb": 64.0}
    assert config.query_limits("admin") == {"rows": 5, "seconds": None, "memory_mb": 256.0}
    assert config.query_limits("deploy") == {"rows": None, "seconds": None, "memory_mb": 256.0}
    assert FederationConfig.from_args(parser.parse_args(["federation", "--data", str(tmp_path)])).files_dir is None
    for bad in ("read", "reader:memory_mb=1", "read:memory=1", "read:memory_mb=0"):
        with pytest.raises(ValueError):
            parse_query_limits(bad)


async def test_remote_clients_cannot_load_code_run_the_toploop_or_create_foreign_functions(client, tokens, config):
    (config.files_dir / "defs.osql").write_text("set :x = 1;")
    status, lines = await run(client, tokens, "admin", "load_osql('defs.osql');")
    assert status == 400 and "not as a query" in lines[0]["error"]["message"]
    status, lines = await run(client, tokens, "admin", "select load_osql('defs.osql');")
    assert status == 400 and "statement of its own" in lines[0]["error"]["message"]
    for statement in ("commit;", "rollback;", "quit;"):
        status, lines = await run(client, tokens, "admin", statement)
        assert status == 400 and "not of a federation" in lines[0]["error"]["message"], statement
    status, lines = await run(client, tokens, "admin",
                              "create function f(Real x) -> Real as foreign 'py:os.getcwd';")
    assert status == 400 and "allow-list" in lines[0]["error"]["message"]
    assert (lines[0]["error"]["line"], lines[0]["error"]["column"]) == (1, 38)   # at `foreign`


def test_the_deployment_window_and_concurrency_come_from_flags_or_the_config_file(tmp_path):
    from federation.cli import _apply_config_file

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    plain = FederationConfig.from_args(parser.parse_args(["federation", "--data", str(tmp_path)]))
    assert (plain.deploy_window, plain.deploy_concurrency) == (1000, 64)
    flags = parser.parse_args(["federation", "--data", str(tmp_path), "--deploy-window", "250",
                               "--deploy-concurrency", "16"])
    config = FederationConfig.from_args(flags)
    assert (config.deploy_window, config.deploy_concurrency) == (250, 16)
    toml = tmp_path / "federation.toml"
    toml.write_text("deploy-window = 300\ndeploy_concurrency = 8\n")
    args = parser.parse_args(["federation", "--data", str(tmp_path), "--config", str(toml)])
    _apply_config_file(args)
    config = FederationConfig.from_args(args)
    assert (config.deploy_window, config.deploy_concurrency) == (300, 8)
    with pytest.raises(ValueError):
        FederationConfig(data_dir=tmp_path, deploy_window=0)
