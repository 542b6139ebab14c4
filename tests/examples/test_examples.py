"""The examples run as documented, and the example bundle is reproducible and passes its tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import streamql
from streamql.models import read_bundle, run_bundle_tests

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("script", sorted((EXAMPLES / "local").glob("*.sql")), ids=lambda p: p.name)
def test_local_example_scripts_run(script):
    engine = streamql.Engine()
    results = engine.execute(script.read_text())
    rows = [list(r) for r in results if r.kind != "statement"]
    assert rows and all(rows)


def test_deadband_example_reduces_the_data():
    engine = streamql.Engine()
    results = engine.execute((EXAMPLES / "local" / "deadband.sql").read_text())
    before, after = next(r for r in results if r.kind == "bag").rows[0]
    assert before == 600 and 50 < after < 200


# the checkout's code, whether or not the package is installed
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_the_embedding_example_runs():
    run = subprocess.run([sys.executable, str(EXAMPLES / "local" / "embedding.py")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=CHECKOUT_ENV)
    assert run.returncode == 0, run.stderr
    assert "loud windows" in run.stdout and "TypeError at line 1" in run.stdout and "[212.0]" in run.stdout


def test_the_example_bundle_rebuilds_byte_for_byte(tmp_path):
    copy = tmp_path / "bundles"
    shutil.copytree(EXAMPLES / "bundles", copy)
    run = subprocess.run([sys.executable, str(copy / "build_vib_anomaly.py")], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=CHECKOUT_ENV)
    assert run.returncode == 0, run.stderr
    for artifact in ("vib_f32.tflite", "vib_i8.tflite", "fallback.json"):
        assert (copy / "vib-anomaly" / "models" / artifact).read_bytes() == \
            (EXAMPLES / "bundles" / "vib-anomaly" / "models" / artifact).read_bytes(), artifact
    assert (copy / "vib-anomaly" / "manifest.json").read_text() == \
        (EXAMPLES / "bundles" / "vib-anomaly" / "manifest.json").read_text()


@pytest.mark.parametrize("variant", ["float32", "int8", "numpy"])
def test_the_example_bundle_passes_its_own_tests_with_every_variant(variant):
    from streamql.models import pack_bytes
    bundle = read_bundle(pack_bytes(EXAMPLES / "bundles" / "vib-anomaly"))
    capabilities = {"ram_kb": {"float32": 4096, "int8": 32, "numpy": 8}[variant]}
    if variant == "numpy":
        capabilities["runtimes"] = {"numpy": "2.0"}
    engine = streamql.Engine()
    from streamql.models import install_bundle
    installed = install_bundle(engine, bundle, capabilities, autostart=False)
    assert installed.variants == {"vib_anomaly": variant}
    report = run_bundle_tests(bundle, engine)
    assert report.passed and len(report.results) == 2, report
