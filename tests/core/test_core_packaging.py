"""The wheel: built from the repository and used from another directory, it carries the grammar,
the examples (the demo's bundle and the edge configuration) and the dashboard, and parses and runs."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(ROOT)], capture_output=True, text=True, cwd=str(out))
    assert build.returncode == 0, build.stderr[-2000:]
    [made] = out.glob("streamql-*.whl")
    return made


def test_the_wheel_carries_the_grammar_examples_and_dashboard(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "streamql/grammar/streamql.lark" in names
    assert "streamql/examples/edge/edge.toml" in names
    assert any(n.startswith("streamql/examples/bundles/vib-anomaly/") for n in names)
    assert any(n.startswith("federation/static/") and n.endswith(".html") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_an_installed_streamql_works_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import streamql, sys; print(streamql.__file__); "
            "e = streamql.Engine(); print(sorted(e.query('select x * 2 from Integer x where x in (1, 2, 3);')))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)       # the installed copy, not the repository's
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(elsewhere), env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    location, answer = run.stdout.splitlines()
    assert Path(location).is_relative_to(target)
    assert answer == "[2, 4, 6]"
