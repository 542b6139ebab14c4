"""End-to-end helpers: `streamql demo --no-shell` as a real process (a federation process, a
simulated fleet process of real edge daemons, signed bundles uploaded)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EDGES = 12
SEED = 7


class Demo:
    def __init__(self, data: Path, edges: int = EDGES, seed: int = SEED):
        self.data = data
        self.edges = edges
        self.seed = seed
        self.log = open(data.parent / f"{data.name}.out", "w")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamql.cli", "demo", "--no-shell", "--edges", str(edges), "--seed", str(seed),
             "--port", "0", "--data", str(data)], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            cwd=str(ROOT))
        self.url = self.read_token = None
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"Dashboard: (http://[^/]+)/\?token=(\S+)", line)
            if found:
                self.url, self.read_token = found.groups()
            if line.startswith("Running"):
                break
        if self.url is None:
            self.stop()
            raise RuntimeError("the demo did not start:\n" + "".join(lines))
        self.admin = (data / "federation" / "admin.token").read_text().strip()
        self.public_key = data / "demo.pub"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
