"""Staged rollouts, the arithmetic: how a deployment's devices split into waves, when a wave has
failed too much, and when a device counts as healthy. Pure functions; the deployment manager
(federation/deployments.py) drives them.

    policy = policy_for("deploy", statement.rollout, RolloutDefaults())
    policy.wave_sizes(21)                  # [2, 19]: a first wave of 5 percent (at least one), then the rest
    exceeds(failed=1, finished=2, threshold=policy.threshold)          # True: abort
    health_verdict(expected, health)       # ("healthy" | "waiting" | "failed", why)

Defaults (docs/models.md, Rollouts): a `deploy` goes to a first wave of 5 percent of its devices
(at least one), then to the rest; it aborts when more than 10 percent of the devices a wave
finished have failed; a wave waits at most five minutes for its devices to report healthy. A
`rollback` or `undeploy` goes out in one wave (an undo should not be slowed down) unless the
statement says otherwise. The last wave is never "aborted": nothing is left to stop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from streamql import ast as A

__all__ = ["RolloutDefaults", "RolloutPolicy", "policy_for", "exceeds", "health_verdict"]

HEALTHY, WAITING, FAILED = "healthy", "waiting", "failed"


@dataclass(frozen=True)
class RolloutDefaults:
    """What a statement that says nothing about its rollout gets (FederationConfig sets these)."""

    waves: int | None = None            # None: a first wave of `first_wave_percent`, then the rest
    first_wave_percent: float = 5.0
    threshold: float = 0.1              # abort when more than this share of a wave's finished devices failed
    timeout_s: float = 300.0            # how long a wave waits for its devices to report healthy


@dataclass(frozen=True)
class RolloutPolicy:
    """One deployment's rollout: wave sizes as written (`waves` equal waves, or `sizes` — counts or
    percentages — then the rest), the abort threshold (a fraction), the wave timeout, and whether
    an abort rolls the installed devices back."""

    waves: int | None = None
    sizes: tuple[tuple[float, bool], ...] = ()
    threshold: float = 0.1
    timeout_s: float = 300.0
    rollback_on_abort: bool = False

    def wave_sizes(self, devices: int) -> list[int]:
        """How many devices each wave gets, in order; they add up to `devices`, none is empty."""
        if devices <= 0:
            return []
        if self.waves is not None:
            count = max(1, min(self.waves, devices))
            base, extra = divmod(devices, count)
            # the larger waves come last: the early ones are the cautious ones
            return [base + (1 if i >= count - extra else 0) for i in range(count)]
        out, left = [], devices
        for number, percent in self.sizes:
            if left == 0:
                break
            size = max(1, math.ceil(number * devices / 100 - 1e-9)) if percent else int(number)
            size = min(size, left)
            out.append(size)
            left -= size
        if left:
            out.append(left)
        return out

    def describe(self) -> str:
        """The policy in the statement's words (for messages and progress)."""
        if self.waves is not None:
            waves = f"over {self.waves} waves"
        else:
            waves = "over waves of " + ", ".join(f"{n:g}" + (" percent" if p else "") for n, p in self.sizes)
        text = f"{waves} abort above {self.threshold * 100:g} percent wave timeout {self.timeout_s:g} seconds"
        return text + (" rollback on abort" if self.rollback_on_abort else "")

    def to_dict(self) -> dict:
        return {"waves": self.waves, "sizes": [[n, p] for n, p in self.sizes], "threshold": self.threshold,
                "timeout_s": self.timeout_s, "rollback_on_abort": self.rollback_on_abort}

    @classmethod
    def from_dict(cls, data: dict | None, defaults: "RolloutPolicy") -> "RolloutPolicy":
        """The policy a deployment recorded (older records have none: the defaults)."""
        if not data:
            return defaults
        return cls(data.get("waves"), tuple((n, bool(p)) for n, p in data.get("sizes") or ()),
                   float(data.get("threshold", defaults.threshold)), float(data.get("timeout_s", defaults.timeout_s)),
                   bool(data.get("rollback_on_abort")))


def policy_for(action: str, rollout: A.Rollout | None, defaults: RolloutDefaults, *, waves: int | None = None,
               threshold: float | None = None) -> RolloutPolicy:
    """The policy of a statement: what it says, else the defaults for its action. `waves` and
    `threshold` (a fraction) are the manager's keyword arguments, for callers without a statement."""
    if action == "deploy":
        policy = RolloutPolicy(defaults.waves, () if defaults.waves else ((defaults.first_wave_percent, True),),
                               defaults.threshold, defaults.timeout_s)
    else:
        policy = RolloutPolicy(1, (), defaults.threshold, defaults.timeout_s)   # one wave: never checked
    if waves is not None:
        policy = replace(policy, waves=int(waves), sizes=())
    if threshold is not None:
        policy = replace(policy, threshold=float(threshold))
    if rollout is not None:
        if rollout.waves is not None:
            policy = replace(policy, waves=rollout.waves, sizes=())
        if rollout.wave_sizes:
            policy = replace(policy, waves=None, sizes=tuple((float(n), p) for n, p in rollout.wave_sizes))
        if rollout.abort_above is not None:
            policy = replace(policy, threshold=rollout.abort_above / 100)
        if rollout.wave_timeout is not None:
            policy = replace(policy, timeout_s=float(rollout.wave_timeout))
        policy = replace(policy, rollback_on_abort=rollout.rollback_on_abort)
    return policy


def exceeds(failed: int, finished: int, threshold: float) -> bool:
    """Whether a wave failed too much: the share of failed devices among those it finished
    (healthy or failed; offline and unanswered ones do not count) is above the threshold."""
    return finished > 0 and failed / finished > threshold + 1e-12


def health_verdict(expected: dict, health: dict[str, Any]) -> tuple[str, str]:
    """Whether a health frame shows a change as working.

    `expected` comes from the device's ack: {model, version, autostart: [query names], loaded:
    {model: version}}. Healthy: the bundle active at its version, its models loaded at theirs,
    every named autostart query running (or done) without a restart. Failed: one of those
    queries failed or was restarted. Waiting otherwise (the frame may predate the change).
    """
    model, version = expected["model"], expected.get("version")
    active = (health.get("models") or {}).get(model)
    if active != version:
        return WAITING, f"the device reports version {active} of {model}"
    loaded = health.get("loaded")
    for name, wanted in (expected.get("loaded") or {}).items():
        if loaded is not None and loaded.get(name) != wanted:
            return WAITING, f"model {name} {wanted} is not loaded"
    queries = {q.get("query"): q for q in health.get("autostart") or () if isinstance(q, dict)}
    waiting = None
    for name in expected.get("autostart") or ():
        query = queries.get(name)
        if query is None:
            waiting = waiting or f"autostart query {name} is not reported yet"
        elif query.get("status") in ("failed", "gave up") or (query.get("restarts") or 0) > 0:
            return FAILED, f"autostart query {name} failed: {query.get('error') or 'it was restarted'}"
        elif query.get("status") not in ("running", "done"):
            waiting = waiting or f"autostart query {name} is {query.get('status')}"
    return (WAITING, waiting) if waiting else (HEALTHY, "healthy")
