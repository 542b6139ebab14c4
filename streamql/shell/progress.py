"""The live progress bar of a `deploy`, `rollback` or `undeploy` on a federation.

A progress record is a snapshot of the rollout, a plain dict (a federation session yields one
each time something changes; the last one has every device settled or `complete` true):

    {"action": "deploy", "model": "vib-anomaly", "version": "1.2.0", "deployment": "d-17",
     "devices": {"wl-1": {"state": "done"},
                 "wl-2": {"state": "skipped", "reason": "needs ram_kb 512, has 256"},
                 "d-7":  {"state": "failed", "reason": "checksum mismatch"},
                 "d-9":  {"state": "pending"}},           # or "running"
     "wave": {"current": 1, "count": 3, "state": "running", "sizes": [2, 20, 22]},   # optional
     "abort": {"wave": 1, "reason": "…", "rollback": "done"},         # optional: it was aborted
     "complete": False}

A device's entry may also be just its state string (`"wl-1": "done"`). A device installed and
waiting to report healthy is `running`; one undone after an abort is `rolled_back`.
"""
from __future__ import annotations

from collections import Counter

STATES = ("done", "rolled_back", "skipped", "failed", "running", "pending")
_BAR = {"done": "█", "rolled_back": "▚", "skipped": "▒", "failed": "▓", "running": "░", "pending": "·"}
_COLOR = {"done": 32, "rolled_back": 35, "skipped": 33, "failed": 31, "running": 36, "pending": 90}
_SETTLED = {"done", "rolled_back", "skipped", "failed"}


def device_states(record: dict) -> dict[str, tuple[str, str | None]]:
    """device id → (state, reason) with states normalized to `STATES`."""
    out = {}
    for device, entry in (record.get("devices") or {}).items():
        if isinstance(entry, str):
            state, reason = entry, None
        else:
            state, reason = entry.get("state", "pending"), entry.get("reason")
        state = str(state).lower()
        if state in ("ok", "succeeded", "success", "deployed", "completed"):
            state = "done"
        elif state in ("error", "failure"):
            state = "failed"
        elif state in ("in_progress", "started", "sending", "installing", "installed"):
            state = "running"
        elif state in ("rolled back", "rolledback"):
            state = "rolled_back"
        elif state not in STATES:
            state = "pending"
        out[str(device)] = (state, reason)
    return out


def is_complete(record: dict) -> bool:
    if record.get("complete"):
        return True
    states = device_states(record)
    return bool(states) and all(state in _SETTLED for state, _ in states.values())


def _paint(text: str, state: str, color: bool) -> str:
    return f"\x1b[{_COLOR[state]}m{text}\x1b[0m" if color and text else text


def render_progress(record: dict, width: int = 80, color: bool = False, max_reasons: int = 6) -> list[str]:
    """The rollout as a few lines: a title, a bar of done/skipped/failed/pending, then the
    reasons for skipped and failed devices grouped by reason."""
    states = device_states(record)
    counts = Counter(state for state, _ in states.values())
    total = len(states)
    action = record.get("action", "deploy")
    model = record.get("model")
    title = action + (f" model '{model}'" if model else "") + \
        (f" version {record['version']}" if record.get("version") else "") + f" → {total} device{'s' * (total != 1)}"
    if record.get("deployment") is not None:
        title += f"  [{record['deployment']}]"
    settled = sum(counts[s] for s in _SETTLED)
    summary = (f"{settled}/{total}  done {counts['done']} · skipped {counts['skipped']} · "
               f"failed {counts['failed']} · pending {counts['pending'] + counts['running']}")
    if counts["rolled_back"]:
        summary += f" · rolled back {counts['rolled_back']}"
    room = max(10, width - len(summary) - 4)
    bar = ""
    if total:
        cells = {state: round(counts[state] * room / total) for state in STATES}
        # what rounding left over (or took too much) goes to the largest state, never to an empty one
        largest = max(STATES, key=lambda state: counts[state])
        cells[largest] = max(0, cells[largest] + room - sum(cells.values()))
        for state in STATES:
            bar += _paint(_BAR[state] * cells[state], state, color)
    else:
        bar = " " * room
    lines = [title, f"[{bar}] {summary}"]
    wave, abort = record.get("wave"), record.get("abort")
    if abort:
        rollback = {"running": "; rolling the installed devices back", "done": "; the installed devices were rolled back"}
        lines.append(_paint(abort.get("reason") or "rollout aborted", "failed", color) +
                     rollback.get(abort.get("rollback"), ""))
    elif wave and (wave.get("count") or 0) > 1:
        if is_complete(record) and wave.get("sizes"):
            lines.append(f"in {wave['count']} waves: " + ", ".join(str(n) for n in wave["sizes"]))
        else:
            lines.append(f"wave {wave.get('current') or 1} of {wave['count']}" +
                         (f" ({wave['state']})" if wave.get("state") else ""))
    for state in ("skipped", "failed", "rolled_back"):
        reasons: dict[str, list[str]] = {}
        for device, (s, reason) in sorted(states.items()):
            if s == state:
                reasons.setdefault(reason or "no reason given", []).append(device)
        for reason, devices in list(reasons.items())[:max_reasons]:
            shown = ", ".join(devices[:5]) + (f" (+{len(devices) - 5} more)" if len(devices) > 5 else "")
            lines.append(f"  {_paint(state.replace('_', ' '), state, color)}: {reason}: {shown}")
        if len(reasons) > max_reasons:
            lines.append(f"  … {len(reasons) - max_reasons} more {state} reasons")
    if is_complete(record):
        ended = "aborted" if abort else "complete"
        lines.append(ended if not counts["failed"] else f"{ended} with {counts['failed']} failed")
    return lines
