"""What a process's fragments cost, split into compiling and running (CPU of their own threads).

Each fragment's worker reads its thread's CPU clock (`time.thread_time`, no system call beyond
the clock) when it starts, when its statement is compiled and when it ends, and adds the two
parts here. A simulator process logs the sums every 30 s (edge_engine/simulate.py), so a soak
shows whether its fragments' CPU goes to parsing and planning or to computing rows, without a
profiler attached. Wall time of compiling is kept apart: it includes waiting for the edge's
compile lock and for the interpreter's lock, which cost no CPU of the thread itself.

The same CPU is also kept by principal (who asked) and statement (its first words and a short
hash of its text), so a soak can tell whose fragments the process computes for: a thread's CPU
clock counts only the time it ran, not the time it waited for the interpreter's lock, which a
stack sampler cannot tell apart.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, fields

__all__ = ["FragmentCosts", "FRAGMENT_COSTS", "FirstRows", "FIRST_ROWS", "statement_key"]

STATEMENT_WORDS = 48     # characters of a statement kept in its key, beside the hash
KEYS_KEPT = 4096         # (principal, statement) pairs kept; past it, new ones go to one "other" pair


@dataclass
class CostTotals:
    fragments: int = 0          # fragments ended
    compiled: int = 0           # of them, compiled (a fragment stopped before compiling is not)
    plans_reused: int = 0       # of the compiled, from the edge's compiled-statement cache
    compile_cpu_s: float = 0.0  # CPU of their threads while compiling (parse, bind, plan, physical)
    compile_wall_s: float = 0.0  # wall time while compiling, waiting for the compile lock included
    run_cpu_s: float = 0.0      # CPU of their threads after compiling (rows, encoding, handing over)

    def minus(self, other: "CostTotals") -> "CostTotals":
        return CostTotals(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


class FragmentCosts:
    """Totals over a process's fragments; `add` is called once per fragment, from its thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._totals = CostTotals()
        self._by_key: dict[tuple[str, str], list] = {}    # (principal, statement) → [fragments, CPU s]

    def add(self, *, compiled: bool, reused: bool, compile_cpu_s: float, compile_wall_s: float,
            run_cpu_s: float, principal: str | None = None, statement: str | None = None) -> None:
        with self._lock:
            key = (principal or "-", statement or "-")
            entry = self._by_key.get(key)
            if entry is None:
                if len(self._by_key) >= KEYS_KEPT:
                    key = ("other", "other")
                entry = self._by_key.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += compile_cpu_s + run_cpu_s
            totals = self._totals
            totals.fragments += 1
            totals.compiled += compiled
            totals.plans_reused += reused
            totals.compile_cpu_s += compile_cpu_s
            totals.compile_wall_s += compile_wall_s
            totals.run_cpu_s += run_cpu_s

    def totals(self) -> CostTotals:
        with self._lock:
            return CostTotals(**{f.name: getattr(self._totals, f.name) for f in fields(self._totals)})

    def by_principal_and_statement(self) -> dict[tuple[str, str], tuple[int, float]]:
        """(principal, statement key) → (fragments ended, their CPU seconds), since the start."""
        with self._lock:
            return {key: (entry[0], entry[1]) for key, entry in self._by_key.items()}


def statement_key(source: str) -> str:
    """A statement's key in the costs by statement: its first words and a short hash of the text."""
    digest = hashlib.blake2s(source.encode(), digest_size=4).hexdigest()
    return f"{digest} {' '.join(source.split())[:STATEMENT_WORDS]}"


FRAGMENT_COSTS = FragmentCosts()


class FirstRows:
    """Where a stream fragment's first row spent its time, by stage: waiting for a thread (the
    process's start line), compiling, computing its first batch (the signal's next reading and the
    compute gate included), and the rows frame waiting for the loop to write it. A simulator logs
    the stages' p50/p95/max every 30 s: a soak's stream with no row in 3 s shows which one held it."""

    STAGES = ("thread", "compile", "first batch", "of it at the gate", "send")
    KEPT = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: list[tuple[float, ...]] = []

    def add(self, received: float, run_at: float, compiled_at: float, batch_at: float, gate_s: float,
            sent_at: float) -> None:
        with self._lock:
            if len(self._seen) < self.KEPT:
                self._seen.append((run_at - received, compiled_at - run_at, batch_at - compiled_at, gate_s,
                                   sent_at - batch_at))

    def take_text(self) -> str:
        """The stages since the last call, as text; emptied."""
        with self._lock:
            seen, self._seen = self._seen, []
        if not seen:
            return "none"
        parts = []
        for i, stage in enumerate(self.STAGES):
            values = sorted(v[i] for v in seen)
            parts.append(f"{stage} p50 {values[len(values) // 2]:.2f} / p95 {values[int(len(values) * 0.95)]:.2f} "
                         f"/ max {values[-1]:.2f} s")
        total = sorted(v[0] + v[1] + v[2] + v[4] for v in seen)
        return (f"{len(seen)}; in all p50 {total[len(total) // 2]:.2f} / p95 {total[int(len(total) * 0.95)]:.2f} / "
                f"max {total[-1]:.2f} s; " + "; ".join(parts))


FIRST_ROWS = FirstRows()
