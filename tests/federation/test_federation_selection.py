"""The selection index against a brute-force oracle written apart from streamql.selection."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.index import SelectionIndex
from streamql.selection import (
    ID, ONLINE, All, And, Compare, Eq, In, IsNull, Like, Not, Or, capability, conjunction, device_lookup, meta,
)

# --- the oracle: SQL/OSQL semantics spelled out independently ----------------------------------


def kind(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "json"


def value_of(device, key):
    if key == ("id",):
        return device.id
    if key == ("online",):
        return device.online
    return (device.metadata if key[0] == "meta" else device.capabilities).get(key[1])


def oracle_compare(have, op, want):
    if kind(have) is None or kind(want) is None or kind(have) != kind(want):
        return False
    if op == "=":
        return have == want
    if op == "!=":
        return have != want
    if kind(have) not in ("number", "string"):
        return False
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want}[op]


def oracle_like(value, pattern):
    if not isinstance(value, str):
        return False
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += {"%": ".*", "_": "."}.get(pattern[i], re.escape(pattern[i]))
        i += 1
    return re.fullmatch(regex, value, re.S) is not None


def oracle(p, d) -> bool:
    if isinstance(p, All):
        return True
    if isinstance(p, And):
        return all(oracle(q, d) for q in p.predicates)
    if isinstance(p, Or):
        return any(oracle(q, d) for q in p.predicates)
    if isinstance(p, Not):
        return not oracle(p.predicate, d)
    if isinstance(p, Eq):
        return oracle_compare(value_of(d, p.key), "=", p.value)
    if isinstance(p, In):
        return any(oracle_compare(value_of(d, p.key), "=", v) for v in p.values)
    if isinstance(p, Compare):
        return oracle_compare(value_of(d, p.key), p.op, p.value)
    if isinstance(p, Like):
        return oracle_like(value_of(d, p.key), p.pattern)
    if isinstance(p, IsNull):
        return kind(value_of(d, p.key)) is None
    raise TypeError(p)


# --- strategies ----------------------------------------------------------------------------------
STRINGS = ["US", "EU", "AU", "us", "", "wheel loader", "dumper", "d%g", "d_7", "wl-1", "a\\b"]
VALUES = st.one_of(
    st.sampled_from(STRINGS), st.sampled_from([-1, 0, 1, 256, 512, 1024, 10**20]),
    st.sampled_from([0.5, 512.0, -20.5, 1.0, math.nan, math.inf]), st.booleans(), st.none(),
    st.sampled_from([[1, 2], {"a": 1}, []]),
)
KEYS = st.sampled_from([meta("region"), meta("kind"), meta("ram"), meta("x"), capability("ram_kb"),
                        capability("signals"), ID, ONLINE])
PATTERNS = st.sampled_from(["US", "%", "_", "U%", "%er", "d\\%g", "d_7", "%-%", "", "a\\\\b", "wl-_"])
OPS = st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="])
ATTRS = st.dictionaries(st.sampled_from(["region", "kind", "ram", "x"]), VALUES, max_size=4)
CAPS = st.dictionaries(st.sampled_from(["ram_kb", "signals"]), VALUES, max_size=2)
IDS = st.sampled_from(["wl-1", "d-7", "e1", "e2", "e3", "US", "x_1", "d%g"])


def atoms():
    return st.one_of(
        st.builds(Eq, KEYS, VALUES), st.builds(In, KEYS, st.lists(VALUES, max_size=4).map(tuple)),
        st.builds(Compare, KEYS, OPS, VALUES), st.builds(Like, KEYS, PATTERNS), st.builds(IsNull, KEYS),
        st.just(All()),
    )


PREDICATES = st.recursive(atoms(), lambda inner: st.one_of(
    st.builds(Not, inner), st.lists(inner, max_size=3).map(lambda ps: And(tuple(ps))),
    st.lists(inner, max_size=3).map(lambda ps: Or(tuple(ps)))), max_leaves=8)


def device(device_id, metadata, capabilities, online):
    return SimpleNamespace(id=device_id, metadata=metadata, capabilities=capabilities, online=online)


DEVICES = st.dictionaries(IDS, st.tuples(ATTRS, CAPS, st.booleans()), max_size=8)
# operations after the first load: (id, new attributes or None to remove)
OPERATIONS = st.lists(st.tuples(IDS, st.one_of(st.none(), st.tuples(ATTRS, CAPS, st.booleans()))), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DEVICES, OPERATIONS, st.lists(PREDICATES, min_size=1, max_size=4))
def test_index_agrees_with_the_oracle(initial, operations, predicates):
    index = SelectionIndex()
    fleet = {i: device(i, *attrs) for i, attrs in initial.items()}
    index.reset(fleet.values())
    for predicate in predicates:   # first on the initial fleet: kept truth tables must follow what changes
        assert sorted(index.select(predicate)) == sorted(i for i, d in fleet.items() if oracle(predicate, d))
    for device_id, change in operations:
        if change is None:
            fleet.pop(device_id, None)
            index.device_removed(device_id)
        else:
            fleet[device_id] = device(device_id, *change)
            index.device_changed(fleet[device_id])
    for predicate in predicates:
        expected = sorted(i for i, d in fleet.items() if oracle(predicate, d))
        assert sorted(index.select(predicate)) == expected, str(predicate)
        assert index.count(predicate) == len(expected)
        # the per-device reference evaluation agrees too
        assert sorted(i for i, d in fleet.items()
                      if predicate.matches(device_lookup(d.id, d.metadata, d.capabilities, d.online))) == expected
    assert len(index) == len(fleet)


def test_online_changes_and_row_reuse_past_capacity():
    index = SelectionIndex()
    index.reset(device(f"e{i}", {"region": "US" if i % 2 else "EU", "n": i}, {}, False) for i in range(3000))
    assert index.count(Eq(meta("region"), "US")) == 1500
    index.online_changed(["e1", "e2", "nope"], True)
    assert sorted(index.select(Eq(ONLINE, True))) == ["e1", "e2"] and index.online_count() == 2
    assert index.select(Not(Eq(ONLINE, True))).__len__() == 2998
    for i in range(0, 3000, 3):
        index.device_removed(f"e{i}")
    index.device_removed("never-there")
    assert len(index) == 2000 and index.count(All()) == 2000
    for i in range(1500):  # reuses the freed rows, then grows
        index.device_changed(device(f"new{i}", {"region": "AU"}, {"ram_kb": i}, True))
    assert index.count(Eq(meta("region"), "AU")) == 1500
    assert index.count(Compare(meta("n"), ">=", 2997)) == 2  # e2998, e2999 (e2997 removed: 2997 % 3 == 0)
    assert index.count(Compare(capability("ram_kb"), "<", 10)) == 10
    assert index.count(IsNull(meta("n"))) == 1500
    assert index.select(Eq(ID, "e1")) == ["e1"] and index.select(Eq(ID, "e0")) == []
    assert set(index.distinct_values(meta("region"))) == {"US", "EU", "AU"}
    assert "e1" in index and "e0" not in index


def test_kept_truth_tables_follow_values_added_after_them():
    index = SelectionIndex()
    index.reset(device(f"e{i}", {"site": f"site-{i}"}, {}, False) for i in range(30))
    site_1 = Like(meta("site"), "site-1%")
    after = Compare(meta("site"), ">", "site-7")
    assert index.count(site_1) == 11 and index.count(after) == 2          # site-1, site-10…19; site-8, site-9
    index.device_changed(device("new", {"site": "site-1000"}, {}, False))
    index.device_changed(device("e1", {"site": "elsewhere"}, {}, False))  # its old value stays in the dictionary
    index.device_changed(device("e9", {"site": "site-99"}, {}, False))
    assert sorted(index.select(site_1)) == sorted(["new"] + [f"e{i}" for i in range(10, 20)])
    assert sorted(index.select(after)) == ["e8", "e9"]
    assert index.count(Like(meta("site"), "else%")) == 1


def test_a_device_update_forgets_keys_it_no_longer_has():
    index = SelectionIndex()
    index.device_changed(device("a", {"region": "US", "kind": "dumper"}, {"ram_kb": 512}, False))
    index.device_changed(device("a", {"region": "EU"}, {}, True))
    assert index.select(Eq(meta("kind"), "dumper")) == []
    assert index.select(IsNull(meta("kind"))) == ["a"]
    assert index.select(Compare(capability("ram_kb"), ">", 0)) == []
    assert index.select(And((Eq(meta("region"), "EU"), Eq(ONLINE, True)))) == ["a"]


@pytest.mark.parametrize("predicate, text", [
    (And((In(meta("region"), ("US", "EU", "AU")), In(meta("kind"), ("wheel loader", "dumper")))),
     "meta(e, 'region') in ('US', 'EU', 'AU') and meta(e, 'kind') in ('wheel loader', 'dumper')"),
    (Or((Eq(ID, "wl-1"), And((Compare(capability("ram_kb"), ">", 512), Eq(ONLINE, True))))),
     "id(e) = 'wl-1' or capability(e, 'ram_kb') > 512 and online(e) = true"),
    (And((Or((Eq(meta("a"), 1), Eq(meta("b"), 2.5))), Not(IsNull(meta("c"))))),
     "(meta(e, 'a') = 1 or meta(e, 'b') = 2.5) and meta(e, 'c') is not null"),
    (Not(And((Like(meta("site"), "n%"), Compare(meta("x"), "<>", "it's")))),
     "not (meta(e, 'site') like 'n%' and meta(e, 'x') != 'it\\'s')"),
    (All(), "true"), (Or(()), "false"),
])
def test_string_forms_for_explain(predicate, text):
    assert str(predicate) == text


def test_bad_predicates_are_refused():
    with pytest.raises(ValueError):
        Eq(("meta",), 1)
    with pytest.raises(ValueError):
        Compare(meta("a"), "=~", 1)
    assert conjunction([All(), And((Eq(meta("a"), 1),)), Eq(meta("b"), 2)]) == And((Eq(meta("a"), 1), Eq(meta("b"), 2)))
    assert conjunction([]) == All()


def test_explain_mentions_the_count():
    index = SelectionIndex()
    index.reset([device("a", {"region": "US"}, {}, True), device("b", {"region": "EU"}, {}, False)])
    assert index.explain(Eq(meta("region"), "US")) == "select edges where meta(e, 'region') = 'US'  -- 1 of 2 devices"
