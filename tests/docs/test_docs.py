"""The documentation cannot drift from the code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import streamql

ROOT = Path(__file__).resolve().parents[2]


def test_the_function_reference_is_generated_from_the_registry():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_every_example_statement_in_the_language_reference_parses():
    text = (ROOT / "docs" / "language.md").read_text()
    blocks = text.split("```")[1::2]
    checked = 0
    for block in blocks:
        if block.startswith(("python", "text")) or "TypeError at" in block or "─" in block or "<expr>" in block:
            continue
        code = "\n".join(line.split("--")[0] for line in block.splitlines() if "…" not in line)
        code = code.replace("[to version '1.1.0'] ", "to version '1.1.0' ")
        if "->" not in code and "select" not in code and "create" not in code:
            continue
        streamql.parse(code)
        checked += 1
    assert checked >= 5
