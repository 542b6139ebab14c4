#!/usr/bin/env python3
"""Regenerate the function reference in docs/language.md from the registries.

    python scripts/gen_docs.py          rewrite the generated section
    python scripts/gen_docs.py --check  exit 1 when docs/language.md is out of date (tests run this)
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN = "<!-- generated: functions -->"
END = "<!-- end generated -->"
DOC = ROOT / "docs" / "language.md"


def generated() -> str:
    from streamql.library import default_library
    from streamql.library.docs import markdown_reference
    from streamql.fleet import FleetFacts, fleet_library
    parts = [markdown_reference(default_library()).rstrip(),
             "### On a federation\n\nBesides these, one function per metadata key (`region(e)`, `kind(e)`, …) "
             "returns that key's value for an edge.\n",
             markdown_reference(fleet_library(FleetFacts(None), [])).split("\n", 2)[2].rstrip()]
    return "\n\n".join(parts)


def updated(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{generated()}\n{END}{tail}"


def main() -> int:
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in sys.argv:
        if new != text:
            print("docs/language.md is out of date: run python scripts/gen_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
