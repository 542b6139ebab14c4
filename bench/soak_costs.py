"""Whose fragments the simulated fleet computes for: its CPU by client group and statement; and who
holds the federation's statement lanes when a statement is refused for want of a slot.

Every simulator process logs, every 30 s, its fragments' CPU by principal and statement
(edge_engine/simulate.py, "fragment CPU by principal and statement over N s: [...]"; a thread's
own CPU clock, so time spent waiting for the interpreter's lock is not counted). The soak makes
its read tokens in order — well-behaved, abandoning, hostile, then one probe — and an edge sees a
fleet statement's principal as `token-ID`, so a principal's id tells its group.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

MARK = "fragment CPU by principal and statement over "


def groups_by_principal(read_ids: list, n_well: int, n_abandon: int, n_hostile: int) -> dict[str, str]:
    """`token-ID` → its group, from the read tokens' ids in the order they were made."""
    out = {}
    for i, token_id in enumerate(read_ids):
        group = ("well-behaved" if i < n_well else "abandoning" if i < n_well + n_abandon
                 else "hostile" if i < n_well + n_abandon + n_hostile else "probe")
        out[f"token-{token_id}"] = group
    return out


def fleet_cpu(logs: list[Path], groups: dict[str, str]) -> dict:
    """The fragments' CPU summed over the logs: by group, and by (group, statement), most first."""
    by_group: dict[str, list] = defaultdict(lambda: [0, 0.0])
    by_statement: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    for path in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            at = line.find(MARK)
            if at < 0:
                continue
            try:
                entries = json.loads(line[line.index(": ", at + len(MARK)) + 2:])
            except ValueError:
                continue
            for principal, statement, n, cpu in entries:
                group = groups.get(principal, "other" if principal != "-" else "no principal")
                for table, key in ((by_group, group), (by_statement, (group, statement))):
                    table[key][0] += n
                    table[key][1] += cpu
    total = sum(cpu for _, cpu in by_group.values()) or 1.0
    return {"total_cpu_s": round(total, 1),
            "by_group": {g: {"fragments": n, "cpu_s": round(cpu, 1), "share": round(cpu / total, 3)}
                         for g, (n, cpu) in sorted(by_group.items(), key=lambda kv: -kv[1][1])},
            "by_statement": [{"group": g, "statement": st, "fragments": n, "cpu_s": round(cpu, 1),
                              "share": round(cpu / total, 3), "ms_each": round(cpu / max(1, n) * 1e3, 2)}
                             for (g, st), (n, cpu) in sorted(by_statement.items(), key=lambda kv: -kv[1][1])[:15]]}


def text(figures: dict) -> str:
    if not figures or not figures.get("by_group"):
        return "fleet CPU by group: not logged"
    out = [f"fleet fragments' CPU: {figures['total_cpu_s']} s in all, by group: " + ", ".join(
        f"{g} {v['cpu_s']} s ({v['share']:.0%}, {v['fragments']} fragments)" for g, v in figures["by_group"].items())]
    out += [f"  {v['share']:6.1%} {v['cpu_s']:8.1f} s {v['fragments']:7d} × {v['ms_each']:8.2f} ms  {v['group']:13s} "
            f"{v['statement']}" for v in figures["by_statement"]]
    return "\n".join(out)


LANES_FULL = "statement lanes full, "
LANES_SUMMARY = "statement lanes over "


def federation_lanes(log: Path, groups: dict[str, str]) -> dict:
    """The federation's lanes when a statement was refused for want of a slot (federation/lanes.py's
    census): slots held by group in each lane, summed over the censuses, with the holders' ages;
    and its 30 s summaries of waits and of cheap statements' wall time against their CPU."""
    held: dict[str, Counter] = defaultdict(Counter)
    ages: dict[tuple[str, str], list] = defaultdict(list)
    censuses, summaries = 0, []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if LANES_SUMMARY in line:
            summaries.append(line[line.index(LANES_SUMMARY):][:400])
            continue
        at = line.find(LANES_FULL)
        if at < 0:
            continue
        try:
            lanes = json.loads(line[line.index(": {", at) + 2:])
        except ValueError:
            continue
        censuses += 1
        for lane, figures in lanes.items():
            for who, since in figures["holders"].items():
                group = groups.get(who, "other")
                held[lane][group] += len(since)
                ages[(lane, group)] += since
    return {"censuses": censuses,
            "held": {lane: {g: round(n / max(1, censuses), 1) for g, n in c.most_common()} for lane, c in held.items()},
            "age_p50_s": {f"{lane} {g}": sorted(a)[len(a) // 2] for (lane, g), a in ages.items() if a},
            "summaries": summaries}


def lanes_text(figures: dict) -> str:
    if not figures or not figures.get("censuses"):
        return "federation lanes: no refusal for want of a slot logged"
    out = [f"federation lanes at {figures['censuses']} refusals (slots held per census, by group): " +
           "; ".join(f"{lane}: " + ", ".join(f"{g} {n}" for g, n in groups.items())
                     for lane, groups in figures["held"].items()),
           "  holders' age p50: " + ", ".join(f"{k} {v} s" for k, v in sorted(figures["age_p50_s"].items()))]
    out += ["  " + s for s in figures["summaries"]]
    return "\n".join(out)
