"""Fleet queries planned across edges: selection, fragments, merging, status — checked against an
oracle computed from the fleet's signals with numpy."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

import streamql
from fleet_support import FLEET, rows_of, vibration

MOTIVATING = """select stream of id(e), w
from Edge e, Vector of Real w
where region(e) in ('US', 'EU', 'AU')
  and kind(e) in ('wheel loader', 'dumper')
  and signal_value('outside_temperature')@e < -20
  and w in winagg(signal_stream('vibration'), 256, 256)@e;"""


def oracle_motivating():
    rows = []
    for device, meta, _, temperature, offset in FLEET:
        if meta["region"] in ("US", "EU", "AU") and meta["kind"] in ("wheel loader", "dumper") \
                and temperature < -20 and device != "d-3":
            for window in vibration(offset).reshape(-1, 256):
                rows.append((device, window))
    return rows


async def test_the_motivating_query_returns_exactly_the_oracle_rows(fleet):
    service, hub, _ = fleet
    rows, result = await rows_of(service, MOTIVATING)
    expected = oracle_motivating()
    assert sorted(r[0] for r in rows) == sorted(r[0] for r in expected)
    got = {(r[0], float(r[1][0])): r[1] for r in rows}
    for device, window in expected:
        np.testing.assert_array_equal(got[(device, float(window[0]))], window)
    # each selected device has an outcome; the one not connected is reported, not missing
    assert result.status["d-3"]["outcome"] == "offline"
    assert result.status["wl-2"] == {"outcome": "answered", "rows": 0, "reason": None}
    assert result.status["wl-1"]["rows"] == 4
    assert set(result.status) == {"wl-1", "wl-2", "d-1", "d-3"}  # x-1 (excavator), d-2 (SE) not selected


async def test_metadata_conditions_are_answered_by_the_index_and_never_reach_edges(fleet):
    service, hub, _ = fleet
    await rows_of(service, MOTIVATING)
    assert set(hub.sources) == {"wl-1", "wl-2", "d-1"}
    fragment = hub.sources["wl-1"][0]
    assert "region" not in fragment and "kind" not in fragment and "@" not in fragment
    assert fragment == ("select stream of w from Vector of Real w where signal_value('outside_temperature') < -20 "
                        "and w in winagg(signal_stream('vibration'), 256, 256);")


async def test_explain_shows_the_device_set_and_the_fragment_before_anything_runs(fleet):
    service, hub, _ = fleet
    rows, _ = await rows_of(service, "explain " + MOTIVATING)
    text = "\n".join(r[0] for r in rows)
    assert "meta(e, 'region') in ('US', 'EU', 'AU')" in text
    assert "4 devices (3 online, 1 offline)" in text
    assert "select stream of w from Vector of Real w" in text
    assert hub.sources == {}


async def test_metadata_inside_an_edge_condition_is_sent_as_that_edges_literal(fleet):
    service, hub, _ = fleet
    rows, _ = await rows_of(service, "select id(e) from Edge e "
                                     "where signal_value('outside_temperature')@e < capability(e, 'limit');")
    expected = sorted(d for d, _, caps, temp, _ in FLEET if temp < caps["limit"] and d != "d-3")
    assert sorted(r[0] for r in rows) == expected
    assert hub.sources["wl-2"] == ["select true where signal_value('outside_temperature') < -30;"]


@pytest.mark.parametrize("aggregates", ["avg(x), count(x), sum(x), min(x), max(x), stdev(x), var(x)",
                                        "avg(x), median(x), count(*)"])
async def test_aggregates_across_edges_match_numpy(fleet, aggregates):
    service, hub, _ = fleet
    rows, result = await rows_of(service, f"select region(e), {aggregates} from Edge e, Real x "
                                          "where x in vectorof(first_n(signal_stream('vibration'), 100))@e "
                                          "group by region(e) order by region(e);")
    by_region: dict = {}
    for device, meta, _, _, offset in FLEET:
        if device != "d-3":
            by_region.setdefault(meta["region"], []).append(vibration(offset)[:100])
    oracle = {"avg": np.mean, "count": len, "sum": np.sum, "min": np.min, "max": np.max,
              "stdev": lambda v: np.std(v, ddof=1), "var": lambda v: np.var(v, ddof=1), "median": np.median,
              "count(*)": len}
    names = [a.strip().split("(")[0] if a.strip() != "count(*)" else "count(*)" for a in aggregates.split(",")]
    assert [r[0] for r in rows] == sorted(by_region)
    for row in rows:
        values = np.concatenate(by_region[row[0]])
        for name, got in zip(names, row[1:]):
            assert got == pytest.approx(oracle[name](values), rel=1e-9), (row[0], name)
    partial = "median" not in aggregates
    fragment = hub.sources["wl-1"][0]
    assert ("sum(x)" in fragment) == partial  # partial aggregates on the edges, raw rows for median


async def test_an_aggregate_over_the_whole_fleet_merges_partials(fleet):
    service, hub, _ = fleet
    rows, _ = await rows_of(service, "select avg(x), count(x) from Edge e, Real x "
                                     "where x in vectorof(first_n(signal_stream('vibration'), 10))@e;")
    values = np.concatenate([vibration(o)[:10] for d, _, _, _, o in FLEET if d != "d-3"])
    assert rows == [[pytest.approx(values.mean()), len(values)]]
    assert hub.sources["x-1"] == ["select sum(x), count(x) from Real x "
                                  "where x in vectorof(first_n(signal_stream('vibration'), 10));"]


async def test_queries_without_edges_are_answered_from_the_registry(fleet):
    service, hub, _ = fleet
    rows, _ = await rows_of(service, "select region(e), count(e) from Edge e group by region(e) order by region(e);")
    assert rows == [["AU", 1], ["EU", 2], ["SE", 1], ["US", 2]]
    rows, _ = await rows_of(service, "select id(e) from Edge e where capability(e, 'ram_kb') >= 2048 "
                                     "and site(e) is null;")
    assert rows == [["d-2"]]
    assert hub.sources == {}


async def test_failed_and_timed_out_devices_are_reported_with_the_reason(fleet):
    service, hub, _ = fleet
    hub.failing["wl-1"] = "no signal named 'vibration'"
    hub.slow.add("x-1")
    rows, result = await rows_of(service, "select id(e), signal_value('outside_temperature')@e from Edge e;")
    assert result.status["wl-1"]["outcome"] == "failed"
    assert "no signal" in result.status["wl-1"]["reason"]
    assert result.status["x-1"]["outcome"] == "timed out"
    assert result.status["d-3"]["outcome"] == "offline"
    assert sorted(r[0] for r in rows) == ["d-1", "d-2", "wl-2"]


async def test_closing_the_result_cancels_the_fragments(fleet):
    service, hub, engines = fleet
    live = streamql.signals.LiveSignal("vibration")
    engines["wl-1"].add_signal("vibration", live)
    result = await service.run("select stream of id(e), x from Edge e, Real x "
                               "where x in signal_stream('vibration')@e and id(e) = 'wl-1';")
    rows = result.rows()
    reader = asyncio.ensure_future(rows.__anext__())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if live.reader_count:
            break
    live.push(1.5)
    assert (await asyncio.wait_for(reader, 5))[1] == 1.5
    await result.aclose()
    await rows.aclose()
    for _ in range(100):
        if live.reader_count == 0:
            break
        await asyncio.sleep(0.02)
    assert live.reader_count == 0
    assert result.status["wl-1"]["outcome"] == "cancelled"


@pytest.mark.parametrize("text, message", [
    ("select id(a) from Edge a, Edge b;", "exactly one Edge"),
    ("select x from Edge e, Integer x where x in iota(1, 3) and x < signal_value('t')@e;", "bound on the edge"),
    ("select signal_value('t')@x from Edge e, Integer x where x in iota(1, 2);", "Edge variable"),
])
async def test_unsupported_shapes_are_clear_errors_with_positions(fleet, text, message):
    service, _, _ = fleet
    with pytest.raises(streamql.QueryError) as caught:
        await rows_of(service, text)
    assert message in caught.value.message
    assert caught.value.line == 1 and caught.value.column is not None
