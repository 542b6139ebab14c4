"""The subject escape is reversible and yields one valid NATS token for any id."""

import re

import pytest

from federation import nats_subjects as subjects

TOKEN_OK = re.compile(r"^[^\s.*>]+$")


@pytest.mark.parametrize("ident", ["edge-1", "a.b", "x*y>z", "tab\there", "ü-é", "=41", "a=b", "_", "all", "日本"])
def test_round_trip_and_valid_token(ident):
    token = subjects.encode_token(ident)
    assert TOKEN_OK.match(token)
    assert subjects.decode_token(token) == ident


def test_distinct_ids_never_share_a_token():
    ids = ["a.b", "a=2Eb", "a b", "a_b", "a-b", "A.b"]
    assert len({subjects.encode_token(i) for i in ids}) == len(ids)


def test_subjects_follow_the_contract():
    assert subjects.down("dev.1") == "sql.down.dev=2E1"
    assert subjects.up("dev.1", "node-a") == "sql.up.dev=2E1.node-a"
    assert subjects.up_all("e") == "sql.up.e.all"
    assert subjects.publish("e") == "sql.pub.e"
    assert subjects.presence_subject("e") == "$KV.sql_presence.e"
    assert subjects.inbox_prefix("e 1") == "_INBOX_e=201"
    assert subjects.edge_of("sql.up.dev=2E1.node-a") == "dev.1"


@pytest.mark.parametrize("bad", ["", "a.b", "=4", "=zz", "a b"])
def test_bad_tokens_are_refused(bad):
    with pytest.raises(ValueError):
        subjects.decode_token(bad)
