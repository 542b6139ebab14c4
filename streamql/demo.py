"""`streamql demo`: fleet in a box.

Starts, on the embedded defaults, a federation and a simulated fleet (60 edges by default: wheel
loaders, dumpers and excavators in the US, EU and AU (and some in CA, CL and ZA), with varying RAM and flash;
signals vibration, outside_temperature, engine_speed and battery), makes a signing key, signs and
uploads the example vibration-anomaly bundle in two versions, prints the dashboard's address, and
opens the shell on the federation. Ctrl-D (or `\\q`) shuts everything down.

The federation and the fleet run as child processes of this one, so a crash in either cannot take
the shell down, and leaving the shell stops both.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import resources
from pathlib import Path

from .client import connect
from .models import keygen, pack, sign
from .shell import main as shell_main

EXAMPLE_STATEMENTS = """\
Try, in the shell (or \\read one of the files in {examples}):

  -- vibration of wheel loaders or dumpers in the US, EU or AU below -20 °C (Ctrl-C stops it)
  select stream of id(e), rms(w) from Edge e, Vector of Real w
   where region(e) in ('US', 'EU', 'AU') and kind(e) in ('wheel loader', 'dumper')
     and signal_value('outside_temperature')@e < -20
     and w in winagg(signal_stream('vibration'), 256, 256)@e;

  -- fleet-wide aggregates by region, split into partial aggregates on the edges
  select region(e), count(x), avg(x), stdev(x) from Edge e, Real x
   where x in vectorof(first_n(signal_stream('engine_speed'), 20))@e
   group by region(e) order by region(e);

  -- the anomaly model to the US, then rolled back
  deploy model 'vib-anomaly' version '1.1.0' to Edge e where region(e) = 'US';
  deploy model 'vib-anomaly' version '1.2.0' to Edge e where region(e) = 'US';
  select id(e), model_version(e, 'vib-anomaly') from Edge e where region(e) = 'US';
  rollback model 'vib-anomaly' on Edge e where region(e) = 'US';
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="a federation, a simulated fleet, a signed model bundle and the shell",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=60, help="simulated edges (default 60)")
    parser.add_argument("--port", type=int, default=8080, help="the federation's port (a free one if taken, or 0)")
    parser.add_argument("--data", help="directory for the federation, the fleet and the keys (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=1, help="the fleet's seed (same seed, same fleet)")
    parser.add_argument("--no-shell", action="store_true", help="start everything and wait for Ctrl-C instead of the shell")
    parser.set_defaults(func=run)


def run(args) -> int:
    temporary = args.data is None
    data = Path(args.data or tempfile.mkdtemp(prefix="streamql-demo-"))
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port(args.port)
    url = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen] = []
    log = open(data / "demo.log", "a", buffering=1)

    def terminated(signum, frame):  # SIGTERM/SIGHUP: stop the children too, as Ctrl-D does
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, terminated)
    try:
        print(f"StreamQL demo in {data}")
        key, pub = _keys(data, keygen)
        bundles = _bundles(data, key, pack, sign)
        print(f"  federation on {url} …", flush=True)
        # a device counts as healthy after looking healthy for 1 s (5 s by default): a snappier demo
        children.append(_spawn(["federation", "--data", str(data / "federation"), "--port", str(port),
                                "--trusted-key", str(pub), "--deploy-settle", "1"], log))
        admin = _wait_for_federation(url, data / "federation" / "admin.token", children[0])
        print(f"  {args.edges} simulated edges …", flush=True)
        # the admin token goes by file, never on a command line (ps shows those to everyone)
        children.append(_spawn(["edge", "--simulate", str(args.edges), "--federation", url,
                                "--provision-token-file", str(data / "federation" / "admin.token"),
                                "--store", str(data / "edges"), "--seed", str(args.seed), "--trusted-key", str(pub),
                                "--log-level", "warning"], log))
        online = _wait_for_edges(url, admin, args.edges, children[1])
        print(f"  {online} edges online")
        fleet = connect(url, admin)
        for path in bundles:
            uploaded = fleet.upload_model(path.read_bytes())
            print(f"  bundle {uploaded['name']} {uploaded['version']} uploaded, signed by key "
                  f"{', '.join(uploaded.get('signed_by') or ['?'])}")
        read_token = _read_token(url, admin)
        print(f"\nDashboard: {url}/?token={read_token}")
        print(f"Shell token (admin): {admin}\n")
        print(EXAMPLE_STATEMENTS.format(examples=_examples_dir() / "fleet"))
        if args.no_shell:
            print("Running; Ctrl-C stops the demo.")
            with contextlib.suppress(KeyboardInterrupt):
                while all(child.poll() is None for child in children):
                    time.sleep(0.5)
            return 0
        return shell_main(argparse.Namespace(federation=url, token=admin, store=None,
                                             history=str(data / "shell_history")))
    finally:
        print("stopping the fleet and the federation …", flush=True)
        for child in reversed(children):
            _stop(child)
        log.close()
        if temporary:
            shutil.rmtree(data, ignore_errors=True)
        print("demo stopped")


# ------------------------------------------------------------------------------------ setup
def _examples_dir() -> Path:
    """The examples: in the wheel (streamql.examples) or, from a checkout, the repository's."""
    try:
        root = resources.files("streamql.examples")
        path = Path(str(root))
        if (path / "bundles").is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "examples"


def _keys(data: Path, keygen) -> tuple[Path, Path]:
    key, pub = data / "demo.key", data / "demo.pub"
    if not key.exists():
        keygen(str(data / "demo"))
    return key, pub


def _bundles(data: Path, key: Path, pack, sign) -> list[Path]:
    """The example bundle as released (1.2.0) and an older release (1.1.0) to roll back to."""
    source = _examples_dir() / "bundles" / "vib-anomaly"
    out = []
    for version in ("1.1.0", "1.2.0"):
        work = data / f"vib-anomaly-{version}"
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(source, work)
        manifest = json.loads((work / "manifest.json").read_text())
        manifest["version"] = version
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        packed = Path(pack(str(work), str(data / f"vib-anomaly-{version}.sqlbundle")))
        sign(str(packed), str(key))
        out.append(packed)
    return out


def _spawn(arguments: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamql.cli", *arguments], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _free_port(preferred: int) -> int:
    """`preferred` if it is free, else (or for 0) a free port the system picks."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_federation(url: str, token_file: Path, child: subprocess.Popen, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the federation stopped at start (exit {child.returncode}); see demo.log")
        if token_file.exists():
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                return token_file.read_text().strip()
        time.sleep(0.1)
    raise SystemExit("the federation did not start in time; see demo.log")


def _wait_for_edges(url: str, token: str, wanted: int, child: subprocess.Popen, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    online = 0
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the simulated fleet stopped at start (exit {child.returncode}); see demo.log")
        with contextlib.suppress(OSError, ValueError):
            request = urllib.request.Request(f"{url}/v1/edges", headers={"Authorization": f"Bearer {token}"})
            body = json.loads(urllib.request.urlopen(request, timeout=2).read())
            edges = body.get("edges", body) if isinstance(body, dict) else body
            online = sum(1 for edge in edges if edge.get("online"))
            if online >= wanted:
                return online
        time.sleep(0.2)
    return online


def _read_token(url: str, admin: str) -> str:
    """A read-only token for the dashboard's address (the admin token stays in the shell)."""
    request = urllib.request.Request(f"{url}/v1/tokens", method="POST",
                                     data=json.dumps({"role": "read", "label": "dashboard"}).encode(),
                                     headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(urllib.request.urlopen(request, timeout=5).read())["token"]
    return admin


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
