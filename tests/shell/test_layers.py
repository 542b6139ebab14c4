"""The shell sits on top: the engine never imports it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_engine_does_not_import_the_shell():
    code = ("import sys, streamql; streamql.Engine().query('select 1;'); "
            "print(sorted(m for m in sys.modules if m.startswith('streamql.shell') or m.startswith('prompt_toolkit')))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_scripts_do_not_need_prompt_toolkit():
    code = ("import sys; from streamql.shell.script import run_files; "
            "print(sorted(m for m in sys.modules if m.startswith('prompt_toolkit')))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"
