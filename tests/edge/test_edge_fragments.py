"""Query fragments: numpy column batches, credit-based backpressure, limits, cancel, one end each."""
import asyncio

import numpy as np

from streamql import wire

STREAM = "select stream of x from Real x where x in signal_stream('vibration');"


def rows_frames(conn, qid):
    return conn.of_type("rows", qid=qid)


async def test_rows_arrive_as_typed_numpy_columns_with_names(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    rows, end = await conn.run_query("select x, x * 1.5, 'r' + 'x' from Integer x where x in iota(1, 3000);",
                                     batch_rows=1000)
    frames = conn.of_type("rows", qid=end["qid"])
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    first = frames[0]
    assert first["names"] == ["x", "x * 1.5", "'r' + 'x'"]
    assert isinstance(first["cols"][0], np.ndarray) and first["cols"][0].dtype == np.int64
    assert isinstance(first["cols"][1], np.ndarray) and first["cols"][1].dtype == np.float64
    assert first["cols"][2][:2] == ["rx", "rx"]
    assert all(f["n"] <= 1000 for f in frames)
    assert sorted(r[0] for r in rows) == list(range(1, 3001))
    assert end["outcome"] == "ok" and end["rows"] == 3000 and "error" not in end


async def test_credit_is_never_exceeded_and_a_paused_fragment_resumes_where_it_stopped(fed, edge_config,
                                                                                        start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qid = await conn.start_query("select stream of x from Integer x where x in siota(1, 10000);",
                                 credit=100, batch_rows=32)
    await conn.wait_for(lambda f: f.t == "rows" and sum(r["n"] for r in rows_frames(conn, qid)) >= 100)
    await asyncio.sleep(0.4)
    assert sum(f["n"] for f in rows_frames(conn, qid)) == 100      # window 100: exactly that many
    assert not conn.of_type("end", qid=qid)                        # paused, not dropped
    assert daemon.fragments.paused() == 1
    await conn.send("credit", qid=qid, add=50)
    await conn.wait_for(lambda f: f.t == "rows" and sum(r["n"] for r in rows_frames(conn, qid)) >= 150)
    await asyncio.sleep(0.3)
    assert sum(f["n"] for f in rows_frames(conn, qid)) == 150
    await conn.send("credit", qid=qid, add=20000)
    end = await conn.next("end", qid=qid, start=0)
    assert end["outcome"] == "ok" and end["rows"] == 10000
    assert conn.rows_of(qid) == list(range(1, 10001))              # nothing lost, nothing repeated, in order


async def test_a_row_limit_sends_exactly_that_many_then_ends_limit(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    rows, end = await conn.run_query(STREAM, limits={"rows": 250})
    assert len(rows) == 250 and end["outcome"] == "limit" and end["rows"] == 250
    assert end["error"]["kind"] == "LimitError"
    rows, end = await conn.run_query("select x from Integer x where x in iota(1, 40);", limits={"rows": 40})
    assert len(rows) == 40 and end["outcome"] == "ok"               # a finite query that ends at its limit
    rows, end = await conn.run_query("select x from Integer x where x in iota(1, 41);", limits={"rows": 40})
    assert len(rows) == 40 and end["outcome"] == "limit"


async def test_a_query_past_its_limits_is_stopped_and_the_others_keep_running(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    steady = await conn.start_query(STREAM)
    timed = await conn.start_query(STREAM, limits={"seconds": 0.5})
    big = await conn.start_query("select vectorof(siota(1, 1000000));", limits={"memory_mb": 1})
    counted = await conn.start_query(STREAM, limits={"rows": 10})
    end = await conn.next("end", qid=timed, start=0, timeout=5)
    assert end["outcome"] == "limit" and "time limit" in end["error"]["message"]
    assert 0.4 < end["seconds"] < 2.0
    end = await conn.next("end", qid=big, start=0)
    assert end["outcome"] == "limit" and "memory limit" in end["error"]["message"] and end["rows"] == 0
    end = await conn.next("end", qid=counted, start=0)
    assert end["outcome"] == "limit" and end["rows"] == 10
    before = sum(f["n"] for f in rows_frames(conn, steady))
    await asyncio.sleep(0.3)
    assert sum(f["n"] for f in rows_frames(conn, steady)) > before    # still streaming
    assert not conn.of_type("end", qid=steady)
    await conn.send("cancel", qid=steady)
    end = await conn.next("end", qid=steady, start=0)
    assert end["outcome"] == "cancelled"


async def test_cancel_answers_at_once_and_nothing_follows_the_end(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qid = await conn.start_query(STREAM, batch_rows=7)
    await conn.next("rows", qid=qid, start=0)
    await conn.send("cancel", qid=qid, reason="client went away")
    end = await conn.next("end", qid=qid, start=0)
    at_end = conn.frames.index(end)
    await asyncio.sleep(0.3)
    assert end["outcome"] == "cancelled"
    assert end["rows"] == sum(f["n"] for f in rows_frames(conn, qid))      # end.rows = rows sent
    assert not [f for f in conn.frames[at_end + 1:] if f.get("qid") == qid]
    assert len(conn.of_type("end", qid=qid)) == 1
    # credit and cancel for a qid that is over (or never was) are ignored, without an error
    await conn.send("credit", qid=qid, add=10)
    await conn.send("cancel", qid="never-was")
    await conn.run_query("select 1;")
    assert not conn.of_type("error")


async def test_errors_end_with_kind_message_and_position(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    _, end = await conn.run_query("select x from Integer x\n where x in iota(1, ;")
    assert end["outcome"] == "error" and end["error"]["kind"] == "ParseError" and end["error"]["line"] == 2
    _, end = await conn.run_query("select nosuch(1);")
    assert end["outcome"] == "error" and end["error"]["kind"] == "NameError" and end["error"]["column"] == 8
    _, end = await conn.run_query("select stream of x from Real x where x in signal_stream('pressure');")
    assert end["outcome"] == "error" and "pressure" in end["error"]["message"]
    _, end = await conn.run_query("create type T;")
    assert end["outcome"] == "error"
    rows, end = await conn.run_query("select :k * 2, :name;", params={"k": 21, "name": "wl"})
    assert rows == [(42, "wl")] and end["outcome"] == "ok"


async def test_a_duplicate_qid_is_refused_and_the_running_query_goes_on(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.start_query(STREAM, qid="same")
    await conn.start_query(STREAM, qid="same")
    error = await conn.next("error", start=0)
    assert error["code"] == "duplicate_query" and error["ref"] == "same"
    await conn.send("cancel", qid="same")
    assert (await conn.next("end", qid="same", start=0))["outcome"] == "cancelled"


async def test_several_fragments_run_concurrently(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    qids = [await conn.start_query(f"select x * {k} from Integer x where x in iota(1, 2000);") for k in range(1, 7)]
    qids.append(await conn.start_query("select stream of signal_value('outside_temperature') "
                                       "from Integer i where i in diota(0.01, 1, 20);"))
    for k, qid in enumerate(qids, 1):
        end = await conn.next("end", qid=qid, start=0)
        assert end["outcome"] == "ok"
        if k <= 6:
            assert sorted(conn.rows_of(qid)) == [x * k for x in range(1, 2001)]
    assert len(conn.of_type("end")) == len(qids)


async def test_fragments_of_a_dropped_connection_stop(fed, edge_config, start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.start_query(STREAM)
    await conn.next("rows", start=0)
    await conn.drop()
    conn2 = await fed.connection("wl-1", newer_than=conn)
    assert daemon.fragments is not None and not daemon.fragments.running
    rows, end = await conn2.run_query("select 1;")
    assert rows == [1] and end["outcome"] == "ok"


def test_rows_frames_respect_the_wire_contract():
    """What the fragments send validates as rows frames, column lengths included."""
    from edge_engine.autostart import item_columns
    from streamql.physical.chunk import Chunk
    chunk = Chunk({"$c0": np.arange(3), "$c1": np.ones((3, 4)), "$c2": ["a", None, {"k": 1}]}, 3)
    n, cols = item_columns(chunk, 3)
    frame = wire.decode(wire.encode(wire.make("rows", qid="q", seq=0, n=n, cols=cols)))
    assert wire.rows_of(frame["n"], frame["cols"])[2][2] == {"k": 1}
    assert frame["cols"][1].shape == (3, 4)


async def test_a_query_whose_filter_drops_every_row_still_stops(fed, edge_config, start_edge):
    import threading
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    silent = "select stream of x from Real x where x in signal_stream('vibration') and x > 1000;"
    timed = await conn.start_query(silent, limits={"seconds": 0.3})
    cancelled = await conn.start_query(silent)
    await asyncio.sleep(0.2)
    await conn.send("cancel", qid=cancelled)
    assert (await conn.next("end", qid=cancelled, start=0))["outcome"] == "cancelled"
    assert (await conn.next("end", qid=timed, start=0))["outcome"] == "limit"
    for _ in range(50):                      # and their threads are gone, not left waiting for a row
        if not [t for t in threading.enumerate() if t.name.startswith("fragment ")]:
            break
        await asyncio.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("fragment ")]


async def test_rows_frames_stay_within_the_federations_frame_limit(edge_config, start_edge):
    from edge_engine.testing import FakeFederation
    fed = FakeFederation(heartbeat_s=0.5, max_frame=20_000)
    await fed.start()
    try:
        await start_edge(edge_config(federation=fed.url))
        conn = await fed.connection("wl-1")
        rows, end = await conn.run_query("select x, x * 1.5 from Integer x where x in iota(1, 20000);",
                                         batch_rows=5000)
        assert end["outcome"] == "ok" and sorted(r[0] for r in rows) == list(range(1, 20001))
        sizes = [len(wire.encode(f)) for f in conn.of_type("rows")]
        assert max(sizes) <= 20_000 and len(sizes) > 8       # 5000-row batches were split to fit
    finally:
        await fed.stop()


async def test_fragments_ended_while_waiting_for_the_compile_lock_do_not_compile(fed, edge_config, start_edge):
    # a starved simulator process piled thousands of finished fragments' threads on its edges'
    # compile locks, each compiling once it got the lock only to find it was over (soak, 2026-12-06)
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    compiled = []
    real_query = daemon.engine.query

    def counting_query(source, *args, **kwargs):
        compiled.append(source)
        return real_query(source, *args, **kwargs)

    daemon.engine.query = counting_query
    with daemon._compile_lock:          # the edge is busy compiling something else
        qids = [await conn.start_query(STREAM) for _ in range(5)]
        await asyncio.sleep(0.2)        # their threads now wait for the lock
        for qid in qids:
            await conn.send("cancel", qid=qid)
        for qid in qids:
            assert (await conn.next("end", qid=qid, start=0))["outcome"] == "cancelled"
    rows, end = await conn.run_query("select 1 + 1;")    # the lock free again: a new query compiles
    assert end["outcome"] == "ok" and rows == [2]
    assert compiled == ["select 1 + 1;"]


async def test_fragment_threads_start_a_few_at_a_time_and_one_ended_in_line_never_starts(
        fed, edge_config, start_edge, monkeypatch):
    # a 10,000-edge fan-out started 2,500 fragment threads at once in each simulator process (load
    # 60–127); now at most a few are started and not yet compiled, the others wait threadless
    import threading
    import time

    from edge_engine import fragments
    from edge_engine.fragment_starts import FragmentStarts

    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    compiling, most, compiled, lock = [0], [0], [], threading.Lock()
    real_compile = fragments.Fragment._compile

    def slow_compile(self):
        with lock:
            compiling[0] += 1
            most[0] = max(most[0], compiling[0])
        try:
            time.sleep(0.1)
            compiled.append(self.source)
            return real_compile(self)
        finally:
            with lock:
                compiling[0] -= 1

    monkeypatch.setattr(fragments.Fragment, "_compile", slow_compile)
    monkeypatch.setattr(fragments, "STARTS", FragmentStarts(3))
    qids = [await conn.start_query(f"select {k} + 1;") for k in range(12)]
    for k, qid in enumerate(qids):
        end = await conn.next("end", qid=qid, start=0)
        assert end["outcome"] == "ok" and conn.rows_of(qid) == [k + 1]
    assert 2 <= most[0] <= 3, most[0]
    # three threads held up in their compile (the edge's lock taken), a fourth in line, cancelled there
    compiled.clear()
    with daemon._compile_lock:
        held = [await conn.start_query(f"select {k} * 2;") for k in range(3)]
        in_line = await conn.start_query("select 99;")
        await asyncio.sleep(0.3)
        assert fragments.STARTS.waiting == 1
        await conn.send("cancel", qid=in_line)
        assert (await conn.next("end", qid=in_line, start=0))["outcome"] == "cancelled"
    for k, qid in enumerate(held):
        assert (await conn.next("end", qid=qid, start=0))["outcome"] == "ok" and conn.rows_of(qid) == [k * 2]
    rows, end = await conn.run_query("select 5;")
    assert end["outcome"] == "ok" and rows == [5]
    assert "select 99;" not in compiled and fragments.STARTS.waiting == 0


async def test_a_fragment_sent_again_reuses_its_plan_with_each_edges_own_parameters(fed, edge_config, start_edge):
    """The edge keeps compiled fragments (edge_engine/daemon.py STATEMENT_CACHE): the same text
    again is not parsed and planned again — and per-edge parameters, bound as constants, are part
    of the key, so each value gets its own answer; the costs say how many plans were reused."""
    from edge_engine.fragment_costs import FRAGMENT_COSTS
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    text = "select :edge_site + '/' + x from Charstring x where x in ('a', 'b');"
    before = FRAGMENT_COSTS.totals()
    answers = []
    for site in ("kiruna", "kiruna", "minot", "kiruna"):
        rows, end = await conn.run_query(text, params={"edge_site": site})
        assert end["outcome"] == "ok", end
        answers.append(sorted(rows))
    assert answers == [["kiruna/a", "kiruna/b"]] * 2 + [["minot/a", "minot/b"]] + [["kiruna/a", "kiruna/b"]]
    # a fragment's thread adds its costs after its end frame is on its way: wait for the last one
    await _costs_settled(lambda: FRAGMENT_COSTS.totals().minus(before).fragments >= 4)
    reused = FRAGMENT_COSTS.totals().minus(before)
    assert reused.fragments == 4 and reused.compiled == 4
    assert reused.plans_reused == 2     # the second and fourth: the same text and parameter value


async def test_the_costs_are_kept_by_principal_and_statement(fed, edge_config, start_edge):
    """What a soak attributes the fleet's CPU by (bench/soak_costs.py): each fragment's CPU under
    its principal and its statement's key, a busy statement's CPU where it belongs."""
    from edge_engine.fragment_costs import FRAGMENT_COSTS, statement_key
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    busy, light = "select count(iota(1, 30000000));", "select 1 + 1;"   # ~0.1 s against ~1 ms
    before = FRAGMENT_COSTS.by_principal_and_statement()
    for principal, text in (("token-7", busy), ("token-8", light), ("token-8", light)):
        rows, end = await conn.run_query(text, principal=principal)
        assert end["outcome"] == "ok", end

    def ended(principal, text):
        return FRAGMENT_COSTS.by_principal_and_statement().get((principal, statement_key(text)), (0, 0.0))[0] - \
            before.get((principal, statement_key(text)), (0, 0.0))[0]
    await _costs_settled(lambda: ended("token-7", busy) >= 1 and ended("token-8", light) >= 2)
    now = FRAGMENT_COSTS.by_principal_and_statement()

    def spent(principal, text):
        n0, cpu0 = before.get((principal, statement_key(text)), (0, 0.0))
        n, cpu = now.get((principal, statement_key(text)), (0, 0.0))
        return n - n0, cpu - cpu0
    (n_busy, cpu_busy), (n_light, cpu_light) = spent("token-7", busy), spent("token-8", light)
    assert n_busy == 1 and n_light == 2
    assert cpu_busy > 5 * max(cpu_light, 1e-4)       # counting 3 million numbers against adding two
    assert spent("token-7", light) == (0, 0.0)
    assert statement_key(busy) != statement_key(light) and statement_key(busy).endswith(busy[:40])


async def _costs_settled(done, timeout: float = 10.0) -> None:
    """Wait until `done()`: a fragment's thread adds its costs just after its end frame is sent."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
