"""The federation seam: FederationSession over a fake client, and the deployment progress bar."""
from __future__ import annotations

import io
import time

from streamql.shell.federation import FederationSession
from streamql.shell.progress import device_states, is_complete, render_progress
from streamql.shell.runner import Runner, Status

from shell_fakes import FakeClient, TtyStringIO, progress_records


def test_progress_bar_from_a_record():
    records = list(progress_records())
    first = render_progress(records[0], width=70)
    assert first[0] == "deploy model 'vib-anomaly' version 1.2.0 → 3 devices  [d-1]"
    assert first[1].endswith("0/3  done 0 · skipped 0 · failed 0 · pending 3")
    last = render_progress(records[-1], width=70)
    assert last[1].endswith("3/3  done 1 · skipped 1 · failed 1 · pending 0")
    assert "  skipped: needs ram_kb 512, has 256: wl-2" in last
    assert "  failed: checksum mismatch: d-7" in last
    assert last[-1] == "complete with 1 failed"
    assert len(last[1]) <= 70


def test_progress_states_are_normalized():
    record = {"devices": {"a": "ok", "b": {"state": "in_progress"}, "c": {"state": "error", "reason": "x"}}}
    assert device_states(record) == {"a": ("done", None), "b": ("running", None), "c": ("failed", "x")}
    assert not is_complete(record)
    assert is_complete({"devices": {"a": "done", "b": "skipped"}})


def test_many_devices_group_their_reasons():
    record = {"devices": {f"e{i}": {"state": "skipped", "reason": "no signal vibration"} for i in range(40)}}
    lines = render_progress(record)
    assert any(line.startswith("  skipped: no signal vibration: e0, e1, e10") and "(+35 more)" in line
               for line in lines)


def test_federation_session_routes_statements_and_answers_catalog_questions():
    client = FakeClient()
    session = FederationSession(client, "https://fleet.example:8443")
    assert session.label == "fleet.example:8443" and session.federated
    assert list(session.run("select x from Integer x where x in iota(1, 2);")) == [1, 2]
    assert session.run("create type T;").message == "type T created"
    assert [e["id"] for e in session.edges()] == ["wl-1", "wl-2", "d-7"]
    assert session.metadata_keys() == ["kind", "region"]
    assert session.signals() == ["outside_temperature", "vibration"]
    assert session.models() == ["vib-anomaly"]
    assert [s.title for s in session.describe("region")] == ["edge metadata key"]
    assert [s.title for s in session.describe("wl-1")] == ["edge"]
    deployment = session.run("deploy model 'vib-anomaly' to Edge e where region(e) = 'US';")
    assert deployment.kind == "deployment" and len(list(deployment)) == 4
    session.close()
    assert client.closed


def test_a_deploy_shows_live_progress_until_complete():
    out, err = TtyStringIO(), io.StringIO()
    runner = Runner(FederationSession(FakeClient()), out, err, redraw_interval=0.0)
    status = runner.run_text("deploy model 'vib-anomaly' version '1.2.0' to Edge e where region(e) in ('US', 'EU');")
    assert status is Status.OK
    text = out.getvalue()
    assert text.count("\x1b[J") >= 3          # redrawn in place as devices settle
    final = text.rsplit("\x1b[J", 1)[1]
    assert "done 1 · skipped 1 · failed 1 · pending 0" in final and "complete with 1 failed" in final
    assert err.getvalue() == ""


def test_edges_in_the_shell(drive):
    t = drive("\\edges\r\\edges wl\r", session=FederationSession(FakeClient(), "http://fleet:8080"))
    assert " wl-1 " in t.out and " d-7 " in t.out and "wheel loader" in t.out
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1795295614.3))
    assert seen in t.out and "1795295614" not in t.out        # last_seen as a time, not epoch seconds
    second = t.out.split("(3 rows)")[1]
    assert "d-7" not in second and "(2 rows)" in second


def test_main_opens_a_federation_session_through_the_seam(monkeypatch, capsys):
    """`streamql shell --federation URL --token T` with a script piped in."""
    import argparse

    import streamql.shell.federation as federation_module
    from streamql.shell import main

    opened = {}

    def connect(url, token):
        opened.update(url=url, token=token)
        return FederationSession(FakeClient(), url)

    monkeypatch.setattr(federation_module, "connect", connect)
    monkeypatch.setattr("sys.stdin", io.StringIO("\\edges\nselect 'on the fleet';\n"))
    args = argparse.Namespace(federation="http://fleet:8080", token="secret", store=None, history=None)
    assert main(args) == 0
    assert opened == {"url": "http://fleet:8080", "token": "secret"}
    out = capsys.readouterr().out
    assert "wl-1" in out and "on the fleet" in out


def test_main_without_a_federation_client(monkeypatch, capsys):
    import argparse

    import streamql.shell.federation as federation_module
    from streamql.shell import main

    def connect(url, token):
        raise ImportError("No module named 'streamql.client'")

    monkeypatch.setattr(federation_module, "connect", connect)
    assert main(argparse.Namespace(federation="http://x", token=None, store=None, history=None)) == 2
    assert "no federation client" in capsys.readouterr().err
