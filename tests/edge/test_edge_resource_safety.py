"""An edge's files and limits are its operator's: statements read only its files directory
(files/ in the store by default; `files`, `--files`, `--no-files`), a query frame's limits may lower
the edge's configured limits but never raise them, and a time limit or a cancel stops a fragment
counting inside one function within about a second."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import threading
import time

import pytest

from edge_engine.config import ConfigError, add_arguments, load_config


def parse(*flags: str) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser()).parse_args(list(flags))


def test_the_files_directory_is_in_the_store_by_default_and_configurable(tmp_path):
    config = load_config(None, parse("--id", "e", "--store", str(tmp_path / "s")), environ={})
    assert config.files_dir == tmp_path / "s" / "files"
    (tmp_path / "edge.toml").write_text('id = "e"\nstore = "s"\nfiles = "replay"\n')
    assert load_config(tmp_path / "edge.toml", environ={}).files_dir == tmp_path / "replay"   # beside the file
    (tmp_path / "edge.toml").write_text('id = "e"\nfiles = false\n')
    assert load_config(tmp_path / "edge.toml", environ={}).files_dir is None
    assert load_config(tmp_path / "edge.toml", parse("--files", "/data"), environ={}).files_dir.as_posix() == "/data"
    (tmp_path / "edge.toml").write_text('id = "e"\n')
    assert load_config(tmp_path / "edge.toml", parse("--no-files"), environ={}).files_dir is None
    (tmp_path / "edge.toml").write_text('id = "e"\nfiles = 3\n')
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "edge.toml", environ={})
    assert caught.value.key == "files"


async def test_statements_on_an_edge_read_only_its_files_directory(fed, edge_config, start_edge, tmp_path):
    files = tmp_path / "store" / "files"
    files.mkdir(parents=True)
    (files / "r.csv").write_text("1,2\n")
    (tmp_path / "secret.csv").write_text("root:x\n")
    (files / "out.csv").symlink_to(tmp_path / "secret.csv")
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    rows, end = await conn.run_query("select vectorof(csv:file_stream('r.csv'));")
    assert end["outcome"] == "ok" and [list(r) for r in rows[0]] == [[1, 2]]
    for path in ("/etc/passwd", "../secret.csv", "out.csv", str(tmp_path / "secret.csv")):
        rows, end = await conn.run_query(f"select vectorof(csv:file_stream('{path}'));")
        assert end["outcome"] == "error" and end["error"]["kind"] == "RuntimeError", end
        assert "reads only files inside" in end["error"]["message"] and "root:" not in end["error"]["message"]
        rows, end = await conn.run_query(f"create model m from '{path}';")
        assert end["outcome"] == "error" and not rows


async def test_an_edge_without_a_files_directory_reads_none(fed, edge_config, start_edge):
    await start_edge(edge_config(files=None))
    conn = await fed.connection("wl-1")
    rows, end = await conn.run_query("select vectorof(json:file_stream('/etc/hostname'));")
    assert end["outcome"] == "error" and "no files directory" in end["error"]["message"]


async def test_a_query_frame_may_lower_the_edges_limits_never_raise_them(fed, edge_config, start_edge):
    config = edge_config()
    await start_edge(dataclasses.replace(config, limits=dataclasses.replace(config.limits, memory_mb=64)))
    conn = await fed.connection("wl-1")
    rows, end = await conn.run_query("select dim(zeros(10000000));", limits={"memory_mb": 100000})   # 80 MB
    assert end["outcome"] == "limit" and "memory limit of 64 MB" in end["error"]["message"], end
    rows, end = await conn.run_query("select dim(zeros(1000000));", limits={"memory_mb": 4})         # 8 MB
    assert end["outcome"] == "limit" and "memory limit of 4 MB" in end["error"]["message"], end
    rows, end = await conn.run_query("select dim(zeros(1000000));")
    assert end["outcome"] == "ok" and rows == [1000000]


async def test_a_fragment_counting_inside_one_call_stops_at_its_time_limit_and_when_cancelled(
        fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")

    def counting() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith("fragment"))

    started = time.monotonic()
    rows, end = await conn.run_query("select count(iota(1, 1000000000000));", limits={"seconds": 0.5})
    assert end["outcome"] == "limit" and time.monotonic() - started < 3
    deadline = time.monotonic() + 2          # the worker itself is gone, not only the answer
    while counting() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert counting() == 0
    qid = await conn.start_query("select count(iota(1, 1000000000000));")
    await asyncio.sleep(0.3)
    await conn.send("cancel", qid=qid)
    end = await conn.next("end", qid=qid, start=0)
    assert end["outcome"] == "cancelled"
    deadline = time.monotonic() + 1.5
    while counting() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert counting() == 0
