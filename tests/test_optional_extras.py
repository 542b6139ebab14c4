"""The embedded default installs nothing more: the scale-out extras (`nats`, `postgres`) and the
MQTT test client are imported only when their configuration asks for them."""
import subprocess
import sys

OPTIONAL = ("nats", "nkeys", "nacl", "psycopg", "psycopg_pool", "paho")


def test_the_embedded_default_imports_no_scale_out_package():
    code = (
        "import sys\n"
        "import streamql, streamql.cli, federation.app, federation.cli, federation.statements\n"
        "import edge_engine.cli, edge_engine.daemon\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
