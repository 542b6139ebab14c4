"""Completion from the session's catalog, by context."""
from __future__ import annotations

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from streamql.shell.completion import StreamQLCompleter
from streamql.shell.federation import FederationSession
from streamql.shell.session import LocalSession

from shell_fakes import FakeClient


@pytest.fixture
def local(engine):
    engine.add_signal("vibration", [0.1, 0.2])
    engine.add_signal("temperature", [20.0])
    engine.execute("create model centroids as kmeans([[0.1, 0.2], [0.9, 0.8]]);"
                   "create type Truck properties (name Charstring key);"
                   "set :limit_high = 3;")
    return StreamQLCompleter(LocalSession(engine), commands=["help", "describe", "output", "read"])


def complete(completer, text, requested=True):
    event = CompleteEvent(completion_requested=requested)
    return [(c.text, c.display_meta_text, c.start_position)
            for c in completer.get_completions(Document(text, len(text)), event)]


def names(completions):
    return [c[0] for c in completions]


def test_keywords_in_the_case_typed(local):
    assert names(complete(local, "sel"))[0] == "select"
    assert names(complete(local, "SEL"))[0] == "SELECT"
    assert ("where", "keyword", -2) in complete(local, "select x from Real x wh")


def test_functions_show_their_signature(local):
    got = {name: meta for name, meta, _ in complete(local, "select win")}
    assert got["winagg"] == "winagg(Stream of T s, Integer size, Integer stride) -> Stream of Vector of T"
    assert "more)" in dict((n, m) for n, m, _ in complete(local, "select ma"))["max"]  # overloads


def test_namespaced_functions(local):
    assert ("csv:file_stream", -6) in [(n, s) for n, _, s in complete(local, "select csv:fi")]


def test_types_after_from_of_and_in_parameter_lists(local):
    assert names(complete(local, "select x from Re")) == ["Real", "Record"]
    assert "Truck" in names(complete(local, "select x from Real x, Tr"))
    assert "Integer" in names(complete(local, "select x from Vector of In"))
    assert "Number" in names(complete(local, "create function f(Nu"))
    assert names(complete(local, "select x from ")) and all(m == "type" for _, m, _ in complete(local, "select x from "))


def test_declared_variables_and_session_variables(local):
    assert ("window", "variable", -3) in complete(local, "select x from Vector of Real window where win")
    assert complete(local, "select :lim") == [(":limit_high", "session variable", -4)]


def test_names_inside_strings_by_call(local):
    assert names(complete(local, "select signal_stream('vi")) == ["vibration"]
    assert names(complete(local, "select signal_value('")) == ["temperature", "vibration"]
    assert names(complete(local, "select predict('cen")) == ["centroids"]
    assert names(complete(local, "select model_version(e, '")) == ["centroids"]
    assert names(complete(local, "drop model '")) == ["centroids"]


def test_flows(engine):
    engine.flows.hub("alerts")
    completer = StreamQLCompleter(LocalSession(engine))
    assert complete(completer, "select subscribe('al") == [("alerts", "flow", -2)]
    assert names(complete(completer, "select publish(s, '")) == ["alerts"]


def test_no_popup_while_typing_after_a_space(local):
    assert complete(local, "select ", requested=False) == []
    assert complete(local, "select 1 -- sel", requested=False) == []
    assert names(complete(local, "select ", requested=True))


def test_only_the_statement_being_typed_counts(local):
    assert names(complete(local, "select 'a;b'; select x from Inte")) == ["Integer"]


def test_meta_commands_and_their_arguments(local, tmp_path):
    assert names(complete(local, "\\de")) == ["describe"]
    assert names(complete(local, "\\output j")) == ["json"]
    assert "winagg" in names(complete(local, "\\describe wina"))
    (tmp_path / "setup.sql").write_text("select 1;")
    assert names(complete(local, f"\\read {tmp_path}/se")) == ["tup.sql"]  # the rest of the name


def test_the_catalog_is_refreshed_after_a_change(engine):
    completer = StreamQLCompleter(LocalSession(engine))
    assert "fahrenheit" not in names(complete(completer, "select fahr"))
    engine.execute("create function fahrenheit(Number c) -> Real as c * 9 / 5 + 32;")
    completer.refresh()
    assert complete(completer, "select fahr")[0][:2] == ("fahrenheit", "fahrenheit(Number c) -> Real")


def test_federation_edge_ids_and_metadata_keys():
    completer = StreamQLCompleter(FederationSession(FakeClient(), "http://fleet:8080"))
    assert ("region", "metadata key", -3) in complete(completer, "select id(e) from Edge e where reg")
    assert names(complete(completer, "select e from Edge e where id(e) = 'wl")) == ["wl-1", "wl-2"]
    assert names(complete(completer, "select e from Edge e where id(e) in ('wl-1', 'd")) == ["d-7"]
    assert names(complete(completer, "select meta(e, 'ki")) == ["kind"]
    assert names(complete(completer, "deploy model 'vib")) == ["vib-anomaly"]
    assert names(complete(completer, "select signal_stream('vib")) == ["vibration"]
