"""Rows with large values are encoded in a worker thread, never on the event loop: one row of
`select zeros(30000000);` (240 MB, inside the default memory limit) would otherwise stall every
client and every edge link for seconds while it becomes JSON."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from federation import results, statements
from federation.results import is_heavy

pytestmark = pytest.mark.timeout(60)


def test_heavy_rows_are_told_by_type_and_size():
    assert not is_heavy([[1, "a", 2.5, None, True]] * 512)
    assert not is_heavy([[np.zeros(10)], [[1.0, 2.0]]])
    assert is_heavy([[np.zeros(100_000)]])
    assert is_heavy([["x" * 100_000]])
    assert is_heavy([[list(range(10_000))]])
    assert is_heavy([[[{"a": 1}]]])          # nested: size unknown, off the loop to be safe


@pytest.mark.parametrize("path", ["post", "ws"])
async def test_a_large_row_is_encoded_off_the_loop(client, tokens, monkeypatch, path):
    threads = []
    to_thread = asyncio.to_thread

    async def recording(fn, *args):
        threads.append(fn)
        return await to_thread(fn, *args)
    monkeypatch.setattr(results.asyncio, "to_thread", recording)
    if path == "post":
        resp = await client.post("/v1/query", json={"query": "select zeros(100000);"}, headers=tokens.header("read"))
        lines = (await resp.text()).splitlines()
        assert resp.status == 200 and json.loads(lines[0]) == [[0.0] * 100_000] and "status" in json.loads(lines[-1])
    else:
        ws = await client.ws_connect("/v1/query/ws", headers=tokens.header("read"))
        await ws.send_json({"type": "query", "id": "z", "query": "select zeros(100000);"})
        while True:
            message = await ws.receive_json(timeout=10)
            if message["type"] == "rows":
                assert message["rows"] == [[[0.0] * 100_000]]
            if message["type"] == "end":
                break
        await ws.close()
    assert threads, "the row was encoded on the event loop"


@pytest.mark.parametrize("path", ["post", "ws"])
async def test_statements_are_parsed_off_the_loop(client, tokens, monkeypatch, path):
    """The routes check a statement (its syntax, the deploy role) in a worker thread: a 64 KiB `in`
    list takes a second or more to parse, and would stall every client and edge link meanwhile."""
    import threading
    threads = []
    parse_one = results.parse_one

    def recording(text, **options):
        threads.append(threading.current_thread() is threading.main_thread())
        return parse_one(text, **options)
    monkeypatch.setattr(results, "parse_one", recording)
    monkeypatch.setattr(statements, "parse_one", recording)    # the service's parse (it checks through it)
    statement = "select count(x) from Integer x where x in (" + ",".join(map(str, range(2000))) + ");"
    if path == "post":
        resp = await client.post("/v1/query", json={"query": statement}, headers=tokens.header("read"))
        assert resp.status == 200 and json.loads((await resp.text()).splitlines()[0]) == [2000]
    else:
        ws = await client.ws_connect("/v1/query/ws", headers=tokens.header("read"))
        await ws.send_json({"type": "query", "id": "p", "query": statement})
        while (message := await ws.receive_json(timeout=10))["type"] not in ("end", "error"):
            pass
        assert message["type"] == "end"
        await ws.close()
    assert threads and not any(threads), "a statement was parsed on the event loop"
