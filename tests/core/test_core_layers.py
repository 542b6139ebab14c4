"""The layers of docs/architecture.md hold: import-linter checks the contracts in pyproject.toml
(imports inside streamql point down; the optimizer imports neither numpy nor the physical layer)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def test_every_layer_contract_is_kept():
    run = lint_imports(ROOT / "pyproject.toml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout


def test_an_import_pointing_up_breaks_the_layers(tmp_path):
    """The contract is not vacuous: the same check fails on a copy where types imports the engine."""
    copy = tmp_path / "streamql"
    copy.mkdir()
    for path in (ROOT / "streamql").rglob("*.py"):
        target = copy / path.relative_to(ROOT / "streamql")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        if path.name == "types.py" and path.parent.name == "streamql":
            text += "\nfrom . import engine  # noqa: E402\n"
        target.write_text(text, encoding="utf-8")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)), timeout=120)
    assert run.returncode != 0
    assert "streamql.types is not allowed to import streamql.engine" in run.stdout
