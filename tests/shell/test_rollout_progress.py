"""The shell's live rollout progress for `rollback` and `undeploy` on a federation (a fake client),
and Ctrl-C while the bar is showing: back to the prompt, the rollout left running."""
from __future__ import annotations

import _thread
import io
import re
import threading
import time

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

import streamql
from streamql.shell.federation import FederationSession
from streamql.shell.repl import Shell
from streamql.shell.runner import Runner, Status

from shell_fakes import DeploymentStarted, FakeClient, TtyStringIO

ROLLBACK = "rollback model 'vib-anomaly' on Edge e where region(e) in ('US', 'EU', 'AU');"
UNDEPLOY = "undeploy model 'vib-anomaly' from Edge e where kind(e) = 'wheel loader';"
FRAME = re.compile(r"\x1b\[\d+F\x1b\[J")   # a redraw: cursor up over the last frame, clear below


def rollback_records():
    """A rollback to 1.1.0 on four devices, settling one at a time (one goes through 'installing')."""
    states = {d: {"state": "pending"} for d in ("wl-1", "wl-2", "d-7", "ex-3")}
    base = {"action": "rollback", "model": "vib-anomaly", "version": "1.1.0", "deployment": "d-2"}

    def snapshot(**extra):
        return {**base, "devices": {k: dict(v) for k, v in states.items()}, **extra}

    yield snapshot()
    states["wl-1"] = {"state": "done"}
    states["ex-3"] = {"state": "installing"}
    yield snapshot()
    states["wl-2"] = {"state": "skipped", "reason": "offline"}
    yield snapshot()
    states["d-7"] = {"state": "failed", "reason": "no previous version installed"}
    yield snapshot()
    states["ex-3"] = {"state": "done"}
    yield snapshot(complete=True)


def undeploy_records():
    """An undeploy (no version) from three devices, all of them done."""
    base = {"action": "undeploy", "model": "vib-anomaly", "deployment": "d-3"}
    devices = ("wl-1", "wl-2", "wl-5")
    for settled in range(len(devices) + 1):
        yield {**base, "devices": {d: ("done" if i < settled else "pending") for i, d in enumerate(devices)},
               "complete": settled == len(devices)}


class RecordingClient(FakeClient):
    """The fake client, noting the statements it executes and the deployments it is asked about."""

    def __init__(self, records, deployment_id="d-1"):
        super().__init__(records)
        self.deployment_id = deployment_id
        self.statements: list[str] = []
        self.watched: list[str] = []

    def execute(self, text):
        self.statements.append(text)
        if any(word in text.lower() for word in ("deploy model", "rollback model", "undeploy model")):
            return [DeploymentStarted(f"deployment {self.deployment_id} started", self.deployment_id)]
        return self.engine.execute(text)

    def deployment_progress(self, deployment_id, stop=None):
        self.watched.append(deployment_id)
        return super().deployment_progress(deployment_id, stop)


class SlowRollout:
    """A rollout on the 'federation' that goes on by itself: `devices` devices, one settling every
    `step` seconds from the moment it starts. `records()` watches it as the client does (a record
    whenever something changed); watching or not watching it does not change the rollout."""

    def __init__(self, devices: int = 40, step: float = 0.1, action: str = "rollback"):
        self.action = action
        self.devices = [f"wl-{i:02d}" for i in range(1, devices + 1)]
        self.step = step
        self.started = time.monotonic()

    def settled(self) -> int:
        return min(len(self.devices), int((time.monotonic() - self.started) / self.step))

    def record(self) -> dict:
        settled = self.settled()
        return {"action": self.action, "model": "vib-anomaly", "deployment": "d-9",
                "devices": {d: ("done" if i < settled else "pending") for i, d in enumerate(self.devices)},
                "complete": settled == len(self.devices)}

    def records(self):
        last = None
        while True:
            record = self.record()
            if record != last:
                yield record
                last = record
            if record["complete"]:
                return
            time.sleep(self.step / 4)


def frames(text: str) -> list[str]:
    return FRAME.split(text)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ------------------------------------------------------------------------- live progress
def test_a_rollback_shows_live_progress_until_complete():
    client = RecordingClient(rollback_records, deployment_id="d-2")
    out, err = TtyStringIO(), io.StringIO()
    runner = Runner(FederationSession(client), out, err, redraw_interval=0.0, color=False)
    assert runner.run_text(ROLLBACK) is Status.OK
    assert client.statements == [ROLLBACK] and client.watched == ["d-2"]
    shown = frames(out.getvalue())
    assert len(shown) >= 4                     # redrawn in place as devices settle
    assert all(frame.startswith("rollback model 'vib-anomaly' version 1.1.0 → 4 devices  [d-2]\n")
               for frame in shown)
    assert "0/4  done 0 · skipped 0 · failed 0 · pending 4" in shown[0]
    # 'installing' is still to come: counted with the pending ones
    assert any("1/4  done 1 · skipped 0 · failed 0 · pending 3" in frame for frame in shown)
    assert any("3/4  done 1 · skipped 1 · failed 1 · pending 1" in frame and "complete" not in frame
               for frame in shown)
    final = shown[-1]
    assert "4/4  done 2 · skipped 1 · failed 1 · pending 0" in final
    assert "  skipped: offline: wl-2" in final
    assert "  failed: no previous version installed: d-7" in final
    assert final.rstrip("\n").endswith("complete with 1 failed")
    assert err.getvalue() == ""


def test_an_undeploy_shows_live_progress_until_complete():
    client = RecordingClient(undeploy_records, deployment_id="d-3")
    out, err = TtyStringIO(), io.StringIO()
    runner = Runner(FederationSession(client), out, err, redraw_interval=0.0, color=False)
    assert runner.run_text(UNDEPLOY) is Status.OK
    assert client.statements == [UNDEPLOY] and client.watched == ["d-3"]
    shown = frames(out.getvalue())
    assert len(shown) >= 4
    assert all(frame.startswith("undeploy model 'vib-anomaly' → 3 devices  [d-3]\n") for frame in shown)
    assert "0/3  done 0 · skipped 0 · failed 0 · pending 3" in shown[0]
    assert any("2/3  done 2 · skipped 0 · failed 0 · pending 1" in frame for frame in shown)
    final = shown[-1]
    assert "3/3  done 3 · skipped 0 · failed 0 · pending 0" in final
    assert final.rstrip("\n").splitlines()[-1] == "complete"
    assert "skipped:" not in final and "failed:" not in final
    assert err.getvalue() == ""


def test_colored_progress_keeps_its_counts_and_final_state():
    out = TtyStringIO()
    runner = Runner(FederationSession(RecordingClient(rollback_records)), out, io.StringIO(), redraw_interval=0.0)
    assert runner.run_text(ROLLBACK) is Status.OK
    final = frames(out.getvalue())[-1]
    assert "\x1b[32m" in final and "\x1b[31m" in final            # done green, failed red
    plain = re.sub(r"\x1b\[\d+m", "", final)
    assert "4/4  done 2 · skipped 1 · failed 1 · pending 0" in plain and "complete with 1 failed" in plain


def test_without_a_terminal_only_the_final_state_is_printed():
    for statement, records, summary, last in (
            (ROLLBACK, rollback_records, "4/4  done 2 · skipped 1 · failed 1 · pending 0", "complete with 1 failed"),
            (UNDEPLOY, undeploy_records, "3/3  done 3 · skipped 0 · failed 0 · pending 0", "complete")):
        out, err = io.StringIO(), io.StringIO()
        runner = Runner(FederationSession(RecordingClient(records)), out, err, redraw_interval=0.0)
        assert runner.run_text(statement) is Status.OK
        text = out.getvalue()
        assert "\x1b" not in text                     # no redraws, no colours
        assert text.count(" model 'vib-anomaly'") == 1 and summary in text
        assert text.splitlines()[-1] == last
        assert err.getvalue() == ""


def test_rollback_and_undeploy_in_the_shell(drive):
    client = RecordingClient(rollback_records)
    t = drive(ROLLBACK + "\r", session=FederationSession(client, "http://fleet:8080"))
    assert t.status == 0 and "4/4  done 2 · skipped 1 · failed 1 · pending 0" in t.out
    assert t.out.splitlines()[-1] == "complete with 1 failed" and t.err == ""
    client = RecordingClient(undeploy_records)
    t = drive(UNDEPLOY + "\r", session=FederationSession(client, "http://fleet:8080"))
    assert t.status == 0 and "3/3  done 3 · skipped 0 · failed 0 · pending 0" in t.out
    assert t.out.splitlines()[-1] == "complete" and t.err == ""


# ---------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_while_the_bar_shows_stops_watching_and_leaves_the_rollout_running():
    rollout = SlowRollout(devices=40, step=0.1)                     # four seconds to settle
    client = RecordingClient(rollout.records, deployment_id="d-9")
    out, err = TtyStringIO(), io.StringIO()
    runner = Runner(FederationSession(client), out, err, redraw_interval=0.0, color=False)

    def interrupt():
        if wait_for(lambda: len(frames(out.getvalue())) >= 3, 5):   # the bar is showing and moving
            _thread.interrupt_main()

    timer = threading.Thread(target=interrupt, daemon=True)
    timer.start()
    started = time.monotonic()
    status = runner.run_text(ROLLBACK)
    timer.join(5)
    assert status is Status.INTERRUPTED
    assert time.monotonic() - started < 3                           # did not wait for the rollout
    assert "(stopped watching: the rollout goes on on the federation)" in err.getvalue()
    assert "still finishing in the background" not in err.getvalue()
    assert "(cancelled)" not in err.getvalue()                      # the rollout was not cancelled
    final = frames(out.getvalue())[-1]
    pending = int(re.search(r"pending (\d+)", final).group(1))
    assert 0 < pending < 40 and "complete" not in final             # left mid-rollout, not at its end
    assert "rollback model 'vib-anomaly' → 40 devices  [d-9]" in final

    # nothing was sent to stop it: the one statement is the rollback; it goes on and completes
    assert client.statements == [ROLLBACK]
    assert wait_for(lambda: rollout.record()["complete"], 10)
    # and the session goes on
    assert runner.run_text("select 'the session survived';") is Status.OK
    assert "the session survived" in out.getvalue()
    assert client.statements == [ROLLBACK]                           # a query, not a fleet statement


def test_ctrl_c_during_an_undeploy_in_the_shell_returns_to_the_prompt(history_file):
    rollout = SlowRollout(devices=40, step=0.1, action="undeploy")
    client = RecordingClient(rollout.records, deployment_id="d-9")
    out, err = TtyStringIO(), io.StringIO()
    interrupted = threading.Event()
    seen: list[str] = []
    with create_pipe_input() as pipe:
        shell = Shell(FederationSession(client, "http://fleet:8080"), history=str(history_file), input=pipe,
                      output=DummyOutput(), out=out, err=err, redraw_interval=0.0, color=False)

        def person():
            pipe.send_text(UNDEPLOY + "\r")
            if not wait_for(lambda: len(frames(out.getvalue())) >= 3, 10):
                pipe.send_text("\x04")
                return
            _thread.interrupt_main()                                # Ctrl-C while the bar shows
            if wait_for(lambda: "stopped watching" in err.getvalue(), 10):
                seen.append(out.getvalue())
                interrupted.set()
            time.sleep(0.2)                                        # the prompt is back
            pipe.send_text("select 'the session survived';\r")
            wait_for(lambda: "the session survived" in out.getvalue(), 10)
            time.sleep(0.2)
            pipe.send_text("\x04")

        thread = threading.Thread(target=person, daemon=True)
        thread.start()
        status = shell.run(banner=False)
        thread.join(10)
    assert interrupted.is_set(), (out.getvalue(), err.getvalue())
    assert status == 0
    watched = frames(seen[0])
    assert len(watched) >= 3 and "undeploy model 'vib-anomaly' → 40 devices  [d-9]" in watched[-1]
    assert "complete" not in seen[0] and 0 < int(re.search(r"pending (\d+)", watched[-1]).group(1)) < 40
    after = out.getvalue()[len(seen[0]):]
    assert "the session survived" in after and "(1 row)" in after
    assert client.statements == [UNDEPLOY]                          # no statement to stop the rollout
    assert wait_for(lambda: rollout.record()["complete"], 10)


def test_the_clients_watching_stops_between_two_polls_when_asked():
    # the real client: Ctrl-C must not leave it polling the federation until the rollout settles
    fleet = streamql.connect("http://127.0.0.1:9", "sqf_unused")
    polls = []

    def deployment(deployment_id):
        polls.append(deployment_id)
        return {"action": "deploy", "model": "m", "version": "1", "id": deployment_id, "state": "running",
                "devices": [{"id": "wl-1", "state": "pending", "reason": None}], "settled": False}

    fleet.deployment = deployment
    stop = threading.Event()
    records = fleet.deployment_progress("7", poll=30.0, stop=stop)
    assert next(records)["deployment"] == "7"
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert list(records) == []
    assert time.monotonic() - started < 10 and polls == ["7"]


def test_a_staged_rollout_shows_its_wave_and_an_abort_with_its_rollback():
    from streamql.shell.progress import is_complete, render_progress
    record = {"action": "deploy", "model": "vib", "version": "2.0.0", "deployment": "7",
              "wave": {"current": 2, "count": 3, "state": "running"},
              "devices": {"e0": {"state": "done"}, "e1": {"state": "installed"}, "e2": {"state": "pending"}}}
    lines = render_progress(record)
    assert lines[2] == "wave 2 of 3 (running)" and "pending 2" in lines[1]   # installed: still running
    finished = {**record, "complete": True, "wave": {**record["wave"], "current": 3, "sizes": [1, 1, 1]},
                "devices": {d: {"state": "done"} for d in record["devices"]}}
    assert render_progress(finished)[2:] == ["in 3 waves: 1, 1, 1", "complete"]
    aborted = {**record, "complete": True,
               "abort": {"wave": 1, "reason": "rollout aborted after wave 1: 2 of 2 devices failed, more than "
                                              "10 percent", "rollback": "done"},
               "devices": {"e0": {"state": "rolled_back", "reason": "autostart query q failed: boom; rolled back "
                                                                     "to 1.0.0"},
                           "e1": {"state": "rolled_back", "reason": "autostart query q failed: boom; rolled back "
                                                                     "to 1.0.0"},
                           "e2": {"state": "skipped", "reason": "rollout aborted after wave 1"}}}
    lines = render_progress(aborted)
    assert "3/3" in lines[1] and lines[1].endswith("· rolled back 2")
    assert lines[2] == ("rollout aborted after wave 1: 2 of 2 devices failed, more than 10 percent; "
                        "the installed devices were rolled back")
    assert "  rolled back: autostart query q failed: boom; rolled back to 1.0.0: e0, e1" in lines
    assert lines[-1] == "aborted" and is_complete({**aborted, "complete": False})
