"""A sampling profiler for the soak's simulator processes, loaded only when asked.

`bench_soak.py --stack-samples DIR` puts this directory first on the fleet's PYTHONPATH; in a
process started with `--simulate`, a daemon thread then looks at every thread's Python stack
every `STREAMQL_STACK_SAMPLE_S` (0.02 s) with `sys._current_frames()` and counts, for the
threads that are not blocked waiting (a lock, a condition, an event, a selector, a sleep), the
stack from its innermost frames outwards, and which stage of a fragment it is in (compiling:
parse, bind, plan, optimize, physical; or running). It writes the counts to
`DIR/stacks-<pid>.json` every 10 s and at exit. A runnable thread is one that wants the CPU (with
the interpreter's lock, one computes at a time): its share of samples is its share of demand.
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
import time

_BLOCKED = {("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("selectors.py", "select"),
            ("queue.py", "get"), ("pacing.py", "_wait"), ("pacing.py", "_rest"), ("pacing.py", "check_in"),
            ("sim_signals.py", "_run"), ("threading.py", "acquire"),
            ("thread.py", "_worker")}   # an idle executor thread waits inside SimpleQueue.get (C)
_STAGES = (("syntax", "parse"), ("binder", "bind"), ("logical.py", "plan"), ("optimizer", "optimize"),
           ("physical", "physical"))


def _where(frame) -> tuple[str, str]:
    code = frame.f_code
    return os.path.basename(code.co_filename), code.co_name


def _sample_forever(out_dir: str, every_s: float) -> None:
    me = threading.get_ident()
    stacks: collections.Counter = collections.Counter()
    stages: collections.Counter = collections.Counter()
    functions: collections.Counter = collections.Counter()
    samples = [0, 0]     # samples taken, runnable thread-samples
    path = os.path.join(out_dir, f"stacks-{os.getpid()}.json")

    def dump() -> None:
        data = {"samples": samples[0], "runnable": samples[1], "every_s": every_s,
                "stages": stages.most_common(), "functions": functions.most_common(80),
                "stacks": [[list(s), n] for s, n in stacks.most_common(150)]}
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    atexit.register(dump)
    dumped = time.monotonic()
    while True:
        time.sleep(every_s)
        samples[0] += 1
        for ident, frame in sys._current_frames().items():
            if ident == me or frame is None:
                continue
            top = _where(frame)
            if top in _BLOCKED or top[1] in ("_run_once", "select", "sleep", "wait"):
                continue
            if top == ("fragments.py", "_compile"):   # its only C call of note: the edge's compile lock
                stages["waiting for the compile lock (blocked)"] += 1
                continue
            samples[1] += 1
            chain = []
            stage = None
            in_fragment = False
            f = frame
            while f is not None:
                where = _where(f)
                chain.append(where)
                if where == ("fragments.py", "_compile"):
                    in_fragment, stage = True, f"compile:{stage or 'engine'}"
                elif where == ("fragments.py", "_stream"):
                    in_fragment, stage = True, "run"
                elif stage is None:
                    path_parts = f.f_code.co_filename
                    for marker, name in _STAGES:
                        if f"{os.sep}{marker}" in path_parts:
                            stage = name
                            break
                f = f.f_back
            if not in_fragment:
                stage = "loop" if any(w[1] == "run_forever" for w in chain) else "other thread"
            stages[stage] += 1
            stacks[tuple(f"{a}:{b}" for a, b in chain[:12])] += 1
            for where in set(chain):
                functions[f"{where[0]}:{where[1]}"] += 1
        if time.monotonic() - dumped >= 10.0:
            dump()
            dumped = time.monotonic()


if os.environ.get("STREAMQL_STACK_SAMPLES") and "--simulate" in sys.argv[1:] + list(getattr(sys, "orig_argv", [])):
    threading.Thread(target=_sample_forever, args=(os.environ["STREAMQL_STACK_SAMPLES"],
                                                   float(os.environ.get("STREAMQL_STACK_SAMPLE_S", "0.02"))),
                     daemon=True, name="stack-sampler").start()
