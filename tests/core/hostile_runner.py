"""Runs hostile statements against one engine under `memory_mb` 16 and a short time limit, in a
process whose address space is capped: `python hostile_runner.py cases.json files_dir report.json`
(used by test_core_hostile_library.py, so that a size check that fails takes only this process).

Each case is a script; every statement of it runs under the limits, a query's rows are read (a
stream's up to MAX_ROWS). The report gives, per case, how it ended — the QueryError's kind and
message, or "ok" — and the seconds it took. A MemoryError or any other exception is reported as
what it is: the test fails on it.
"""
from __future__ import annotations

import json
import resource
import sys
import time
import traceback

ADDRESS_SPACE = 1536 << 20    # the whole process: numpy, the engine and whatever a statement builds
LIMITS = {"memory_mb": 16, "seconds": 2}
MAX_ROWS = 100_000


def run_case(engine, script: str) -> dict:
    from streamql import QueryError

    started = time.monotonic()
    try:
        for result in engine.execute(script, limits=LIMITS):
            for count, _ in enumerate(result, 1):
                if count >= MAX_ROWS:
                    result.close()
                    break
        outcome = {"kind": "ok", "message": ""}
    except QueryError as exc:
        outcome = {"kind": exc.kind, "message": exc.message, "line": exc.line}
    except BaseException as exc:  # noqa: BLE001 - reported: the test fails on anything but a QueryError
        outcome = {"kind": f"escaped {type(exc).__name__}", "message": "".join(traceback.format_exception(exc))[-2000:]}
    outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def main(cases_path: str, files: str, report_path: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import streamql

    cases = json.loads(open(cases_path, encoding="utf-8").read())
    report = {}
    for name, script in cases.items():
        engine = streamql.Engine(files=files)    # a fresh engine: a case's variables are its own
        report[name] = run_case(engine, script)
        engine.close()
        with open(report_path, "w", encoding="utf-8") as out:   # written as it goes: a kill shows where
            json.dump(report, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
