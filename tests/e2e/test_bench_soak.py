"""The soak benchmark (bench/bench_soak.py) still runs: a few seconds, a few clients, two edges."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_the_soak_bench_runs_and_reports(tmp_path):
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_soak.py"), "--duration", "6", "--clients", "6", "--edges", "2",
         "--think", "1", "--skip", "zip_bomb", "--skip", "slowloris", "--skip", "iota_edge", "--skip", "flood",
         "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((report / "report.json").read_text())
    assert sum(figures["well"]["counts"].values()) > 0
    assert figures["sigterm"]["exit"] == 0 and figures["sigterm"]["seconds"] < 10
    assert figures["processes"]["federation"]["hwm_mb"] > 0
    assert "well-behaved clients" in done.stdout and "SIGTERM" in done.stdout
    for log in ("clients-well.log", "clients-bad.log"):
        assert "Traceback" not in (report / log).read_text(), (report / log).read_text()[-3000:]
