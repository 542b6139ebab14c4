"""The `streamql model` command, end to end."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamql import model_cli as cli
from streamql.errors import QueryError

from model_fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]


def run(argv, capsys, engine_factory=FakeEngine):
    code = cli.main([str(a) for a in argv], engine_factory=engine_factory)
    out, err = capsys.readouterr()
    return code, out, err


def test_whole_release_flow(tmp_path, capsys):
    d = tmp_path / "vib"
    code, out, _ = run(["init", d], capsys)
    assert code == 0 and "manifest.json" in out
    bundle = tmp_path / "vib.sqlbundle"
    code, out, _ = run(["pack", d, "-o", bundle], capsys)
    assert code == 0 and f"into {bundle}" in out and bundle.exists()
    code, out, _ = run(["keygen", tmp_path / "release"], capsys)
    assert code == 0 and "release.key" in out and "key id" in out
    code, out, _ = run(["sign", bundle, "--key", tmp_path / "release.key"], capsys)
    assert code == 0 and "signed vib 0.1.0" in out
    code, out, _ = run(["verify", bundle, "--pubkey", tmp_path / "release.pub"], capsys)
    assert code == 0 and out.startswith("OK: vib 0.1.0 is signed by key")
    code, out, _ = run(["test", bundle, "--pubkey", tmp_path / "release.pub"], capsys)
    assert code == 0 and "ok   tests/smoke.sql: vib predicts" in out and "1 passed, 0 failed" in out
    code, out, _ = run(["inspect", bundle], capsys)
    assert code == 0
    assert "bundle vib 0.1.0" in out and "variant float32 (tflite, models/vib.tflite, accuracy 1.0)" in out
    assert "8 MACs" in out and "ops      FULLY_CONNECTED" in out


def test_inspect_json_and_capabilities(tmp_path, capsys):
    d = tmp_path / "vib"
    run(["init", d], capsys)
    code, out, _ = run(["inspect", d, "--json", "--capabilities", '{"runtimes": {"numpy": "2"}}'], capsys)
    report = json.loads(out)
    assert code == 0 and report["fit"]["variants"] == {"vib": "numpy"}
    caps = tmp_path / "device.json"
    caps.write_text(json.dumps({"signals": []}))
    code, out, _ = run(["inspect", d, "--capabilities", caps], capsys)
    assert "does not fit the device: the bundle needs signal 'sensor'" in out


def test_failures_print_plainly_and_exit_non_zero(tmp_path, capsys):
    d = tmp_path / "vib"
    run(["init", d], capsys)
    bundle = tmp_path / "b.sqlbundle"
    run(["pack", d, "-o", bundle], capsys)
    run(["keygen", tmp_path / "k"], capsys)
    code, out, err = run(["verify", bundle, "--pubkey", tmp_path / "k.pub"], capsys)
    assert code == 1 and out == "" and err.startswith("error: bundle 'vib' is not signed")
    code, _, err = run(["test", bundle, "--pubkey", tmp_path / "k.pub"], capsys)
    assert code == 1 and "not signed" in err
    code, _, err = run(["init", d], capsys)
    assert code == 1 and "not an empty directory" in err
    code, _, err = run(["inspect", tmp_path / "missing.sqlbundle"], capsys)
    assert code == 1 and "no bundle file" in err
    code, _, err = run(["keygen", tmp_path / "k"], capsys)
    assert code == 1 and "already exists" in err
    (d / "tests" / "smoke.sql").write_text("validate 'off' check predict('vib', [0, 0, 0, 0]) => [1, 1];")
    code, out, _ = run(["test", d], capsys)
    assert code == 1 and "FAIL tests/smoke.sql: off" in out and "ValidationError" in out
    with pytest.raises(SystemExit) as exc:
        cli.main(["sign", str(bundle)])  # --key is required: a usage error
    assert exc.value.code == 2


def test_register_adds_a_subcommand():
    parser = argparse.ArgumentParser(prog="streamql")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub, engine_factory=FakeEngine)
    args = parser.parse_args(["model", "keygen", "x", "--force"])
    assert args.command == "model" and args.model_command == "keygen" and args.force
    assert callable(args.func) and args.engine_factory is FakeEngine


def test_test_uses_streamql_engine_by_default(tmp_path, capsys, monkeypatch):
    import streamql

    monkeypatch.setattr(streamql, "Engine", FakeEngine, raising=False)
    d = tmp_path / "vib"
    cli.main(["init", str(d)])
    assert cli.main(["test", str(d)]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_test_without_an_engine_is_a_plain_error(tmp_path, capsys):
    def no_engine():
        raise QueryError("this build of streamql has no Engine to run bundle tests in")

    d = tmp_path / "vib"
    cli.main(["init", str(d)])
    code = cli.main(["test", str(d)], engine_factory=no_engine)
    _, err = capsys.readouterr()
    assert code == 1 and "has no Engine" in err


def test_standalone_module(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    d = tmp_path / "standalone"

    def sh(*args):
        return subprocess.run([sys.executable, "-m", "streamql.model_cli", *map(str, args)],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    assert sh("init", d).returncode == 0
    packed = sh("pack", d)
    assert packed.returncode == 0, packed.stderr
    assert (tmp_path / "standalone-0.1.0.sqlbundle").exists()
    bad = sh("verify", "standalone-0.1.0.sqlbundle", "--pubkey", "nope.pub")
    assert bad.returncode == 1 and bad.stderr.startswith("error: no public key file 'nope.pub'")
