"""`streamql federation …` through `federation.cli.main`, and serving as a real process."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from federation.auth import authenticate
from federation.cli import main
from federation.registry import Registry
from tests.loopback import free_port


def registry_at(data) -> Registry:
    return Registry(data / "registry.sqlite3")


def test_provision_prints_a_token_once(tmp_path, capsys):
    assert main(["provision", "--data", str(tmp_path), "--id", "wl-1", "--meta", "region=US",
                 "--meta", "kind=wheel loader", "--meta", "ram=512", "--capability", "ram_kb=1024",
                 "--capability", "signals=[\"vibration\"]"]) == 0
    token = capsys.readouterr().out.strip()
    with registry_at(tmp_path) as registry:
        device = registry.get_device("wl-1")
        assert device.metadata == {"region": "US", "kind": "wheel loader", "ram": 512}
        assert device.capabilities == {"ram_kb": 1024, "signals": ["vibration"]}
        assert authenticate(registry, token).device_id == "wl-1"
    assert main(["federation", "provision", "--data", str(tmp_path), "--id", "wl-1"]) == 1  # already there
    assert "already registered" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["provision", "--data", str(tmp_path), "--id", "x", "--meta", "no-equals-sign"])


def test_tokens_create_list_revoke(tmp_path, capsys):
    assert main(["token", "create", "--data", str(tmp_path), "--role", "deploy", "--label", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    with registry_at(tmp_path) as registry:
        assert authenticate(registry, token).role.label == "deploy"
        token_id = registry.list_tokens()[0].id
    assert main(["--data", str(tmp_path), "token", "list"]) == 0  # --data before the subcommand works too
    assert f"{token_id}\tdeploy\tci" in capsys.readouterr().out
    assert main(["token", "revoke", "--data", str(tmp_path), "--token-id", str(token_id)]) == 0
    assert main(["token", "revoke", "--data", str(tmp_path), "--token-id", str(token_id)]) == 1
    with pytest.raises(SystemExit):
        main(["token", "create", "--data", str(tmp_path), "--role", "root"])


def test_serve_as_a_process_and_provision_while_it_runs(tmp_path):
    data, port = tmp_path / "fed", free_port()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "federation.cli", "--port", str(port), "--data", str(data),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        admin = (data / "admin.token").read_text().strip()
        # a device provisioned by the command while the service runs is visible to the service
        subprocess.run([sys.executable, "-m", "federation.cli", "provision", "--data", str(data), "--id", "late",
                        "--meta", "region=AU"], check=True, env=env, capture_output=True)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/edges?meta.region=AU",
                                         headers={"Authorization": f"Bearer {admin}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert b'"late"' in resp.read()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert admin in out and f"http://127.0.0.1:{port}" in out


def test_a_federation_that_cannot_start_says_why_and_exits_1(tmp_path):
    # the serve loop ends the process with os._exit; the start-up error must be said before it
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        done = subprocess.run([sys.executable, "-m", "federation.cli", "--host", "127.0.0.1", "--port", str(port),
                               "--data", str(tmp_path / "fed"), "--log-level", "warning"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "address already in use" in done.stderr and str(port) in done.stderr
    assert "Traceback" not in done.stderr     # an OSError is the operator's to fix: one line, no stack
