"""The layers of docs/architecture.md hold: import-linter checks the contracts in pyproject.toml
(imports inside streamql point down; the optimizer imports neither numpy nor the physical layer;
federation and edge_engine use streamql's public API only, and reach each other over the wire)."""
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
    assert "5 kept, 0 broken" in run.stdout


def _copy(tmp_path: Path, edits: dict[str, str]) -> None:
    """The three packages copied, with `edits` (path → a line appended) applied."""
    for package in ("streamql", "federation", "edge_engine"):
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            target = tmp_path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text(encoding="utf-8")
            if relative in edits:
                text += "\n" + edits[relative] + "  # noqa: E402\n"
            target.write_text(text, encoding="utf-8")


def test_an_import_pointing_up_breaks_the_layers(tmp_path):
    """The contract is not vacuous: the same check fails on a copy where types imports the engine."""
    _copy(tmp_path, {"streamql/types.py": "from . import engine"})
    run = _lint_copy(tmp_path)
    assert run.returncode != 0
    assert "streamql.types is not allowed to import streamql.engine" in run.stdout


def test_the_services_reaching_into_the_engine_break_the_public_api_contract(tmp_path):
    _copy(tmp_path, {"federation/hub.py": "from streamql import binder",
                     "edge_engine/link.py": "import federation.hub"})
    run = _lint_copy(tmp_path)
    assert run.returncode != 0
    assert "federation is not allowed to import streamql.binder" in run.stdout
    assert "edge_engine is not allowed to import federation" in run.stdout


def test_the_services_import_no_private_name_of_the_engine():
    """`from streamql.x import _y` would reach past the public API, whatever the module."""
    import ast as python_ast
    offenders = []
    for package in ("federation", "edge_engine"):
        for path in (ROOT / package).rglob("*.py"):
            tree = python_ast.parse(path.read_text(encoding="utf-8"))
            for node in python_ast.walk(tree):
                if isinstance(node, python_ast.ImportFrom) and (node.module or "").startswith("streamql"):
                    offenders += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                                  if a.name.startswith("_")]
    assert offenders == []


def _lint_copy(tmp_path) -> subprocess.CompletedProcess:
    """import-linter run on the copy in `tmp_path`, with the project's contracts."""
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)), timeout=120)
