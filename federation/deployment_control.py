"""What an operator does to deployments besides starting them: a preflight before (what would
install, wait, be skipped and why, is there already, is likely to fail), and cancel, abort (with or
without rolling back), retry the failed devices and roll back, once one runs or has run.

A mixin of `DeploymentManager` (federation/deployments.py), whose state and helpers it uses:
- **cancel**: the rollout stops; pending devices are `skipped` ("cancelled by …"), devices it was
  sending to as well (they may still install it: what they answer is recorded as what runs). `cancelled`.
- **abort**: the rollout stops as if a wave had crossed the failure threshold: pending devices
  are `skipped`, devices in flight are waited for, and with `rollback` every device that switched
  goes back to what it ran before (`rolled_back`). `aborted`, with `abort.by`.
- **retry**: a new deployment of the same change to the devices that failed.
- **rollback**: a new `rollback` of the model on the devices the deployment brought it to.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import TYPE_CHECKING

from federation.errors import BadRequest, Conflict
from federation.hub import EdgeOffline
from federation.records import DeploymentTarget
from streamql import wire

if TYPE_CHECKING:
    from federation.deployments import _Run

IN_FLIGHT = ("sending", "installed")
UNDO = "-undo"   # the did of the rollback an abort sends: the edge keeps the deploy's did apart


def _note(reason: str | None, more: str) -> str:
    return f"{reason}; {more}" if reason else more

log = logging.getLogger("streamql.federation.deployments")
PREFLIGHT_LIST = 100   # devices listed per outcome of a preflight (the counts are always whole)


class DeploymentControl:
    """Operator actions; needs the DeploymentManager's registry, hub, runs and helpers."""

    # --- before: the preflight ---------------------------------------------------------------------
    def preflight(self, action: str, model: str, version: str | None, device_ids: list[str]) -> dict:
        """What a deployment of these devices would do now, without starting it."""
        bundle = self._load_bundle(action, model, version)
        if bundle is not None:
            version = bundle.version
        device_ids = list(dict.fromkeys(device_ids))
        targets = self._plan_targets(action, model, version, bundle, device_ids)
        online = self.hub.online_ids()
        refused = self.registry.refused_before(action, model, version)
        lists: dict[str, list] = {"install": [], "wait": [], "skip": [], "already": [], "likely_to_fail": []}
        reasons: Counter = Counter()
        for target in targets:
            if target.state == "skipped":
                lists["skip"].append({"id": target.device_id, "reason": target.reason})
                reasons[target.reason] += 1
                continue
            if target.state == "done":
                lists["already"].append({"id": target.device_id, "reason": target.reason})
                continue
            lists["install" if target.device_id in online else "wait"].append({"id": target.device_id})
            if target.device_id in refused:
                lists["likely_to_fail"].append({"id": target.device_id, "reason": refused[target.device_id]})
        return {"action": action, "model": model, "version": version, "selected": len(device_ids),
                "counts": {k: len(v) for k, v in lists.items()},
                "skip_reasons": dict(reasons.most_common()),
                "devices": {k: v[:PREFLIGHT_LIST] for k, v in lists.items()}}

    # --- while it runs: cancel and abort -----------------------------------------------------------
    async def _stop_rollout(self, run: "_Run | None") -> None:
        if run is not None and run.task is not None and not run.task.done():
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task

    def _running(self, deployment_id: str | int):
        deployment = self._require(deployment_id)
        if deployment.state not in ("running", "pending"):
            raise Conflict(f"deployment {deployment.id} is {deployment.state.replace('_', ' ')}, not running")
        return deployment

    async def cancel(self, deployment_id: str | int, by: str) -> dict:
        deployment = self._running(deployment_id)
        run = self._runs.get(deployment.id)
        await self._stop_rollout(run)
        reason = f"cancelled by {by}"
        self.registry.move_targets(deployment.id, ("pending",), "skipped", reason)
        self.registry.move_targets(deployment.id, IN_FLIGHT, "skipped",
                                   f"{reason} while it was being sent: the device may still install it")
        waves = run.waves if run is not None else dict(deployment.waves)
        for entry in waves.get("list") or ():
            if entry.get("state") in ("waiting", "running"):
                entry["state"] = "cancelled"
        waves["cancel"] = {"by": by}
        self.registry.update_deployment(deployment.id, waves=waves)
        self._finish_with(deployment.id, "cancelled", None)
        return self.progress(deployment.id)

    async def abort(self, deployment_id: str | int, by: str, *, rollback: bool = False) -> dict:
        deployment = self._running(deployment_id)
        if rollback and deployment.action != "deploy":
            raise BadRequest(f"rolling back undoes a deploy; a {deployment.action} cannot be rolled back that way")
        run = self._runs.get(deployment.id)
        if run is None:
            raise Conflict(f"deployment {deployment.id} is not driven by this federation")
        if run.waves.get("abort"):
            raise Conflict(f"deployment {deployment.id} is being aborted already")
        await self._stop_rollout(run)
        reason = f"aborted by {by}"
        self.registry.move_targets(deployment.id, ("pending",), "skipped", reason)
        for entry in run.waves.get("list") or ():
            if entry.get("state") == "waiting":
                entry["state"] = "skipped"
            elif entry.get("state") == "running":
                entry["state"] = "aborted"
        run.waves["abort"] = {"wave": run.current_wave, "reason": reason, "by": by,
                              "rollback": "running" if rollback else None}
        self._wave_record(run)
        run.task = self.hub.spawn(self._operator_abort(run), name=f"deployment-{deployment.id}-abort")
        return self.progress(deployment.id)

    async def _operator_abort(self, run: "_Run") -> None:
        try:
            while run.sending or run.watching:   # devices still answering (their timers bound this)
                run.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(run.changed.wait(), run.policy.timeout_s)
            await self._finish_abort(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._finish_with(run.deployment.id, "aborted", "the abort failed inside the federation")
        finally:
            run.poke()

    # --- aborts: after a wave crossed the threshold, or by an operator --------------------------------
    async def _abort(self, run: "_Run", wave: int, failed: int, finished: int) -> None:
        reason = (f"rollout aborted after wave {wave}: {failed} of {finished} devices failed, more than "
                  f"{run.policy.threshold * 100:g} percent")
        self.registry.move_targets(run.deployment.id, ("pending",), "skipped", reason)
        for entry in run.waves.get("list") or ():
            if entry["wave"] > wave:
                entry["state"] = "skipped"
        run.waves["abort"] = {"wave": wave, "reason": reason,
                              "rollback": "running" if run.policy.rollback_on_abort else None}
        self._wave_record(run)
        log.warning("deployment %s: %s", run.deployment.id, reason)
        await self._finish_abort(run)

    async def _finish_abort(self, run: "_Run") -> None:
        run.rolled_out = True
        abort = run.waves["abort"]
        if abort.get("rollback") == "running":
            while run.sending or run.watching:  # devices still answering (their timers bound this)
                run.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(run.changed.wait(), run.policy.timeout_s)
            rolled_back = await self._undo(run)
            abort.update(rollback="done", rolled_back=rolled_back)
            self._wave_record(run)
        self._finish_with(run.deployment.id, "aborted", None)

    async def _undo(self, run: "_Run") -> int:
        """Send every device that switched to the new version back to the one it ran before (or
        undeploy the bundle where it ran none); the number rolled back."""
        deployment, loop = run.deployment, asyncio.get_running_loop()
        targets = [t for t in self.registry.deployment_targets(deployment.id) if t.state in ("done", "failed")]
        versions = self.registry.model_versions([t.device_id for t in targets])
        online = self.hub.online_ids()
        asked: list[tuple[DeploymentTarget, str | None, asyncio.Future]] = []
        for target in targets:
            current = versions.get(target.device_id, {}).get(deployment.bundle)
            if current is None or current.version != deployment.version:
                continue   # it never switched (a nack leaves the old version active)
            if target.device_id not in online:
                self._set(deployment.id, target.device_id, target.state,
                          _note(target.reason, f"not rolled back: offline, it runs {deployment.version}"))
                continue
            before = current.previous_version
            fields = {"did": run.did + UNDO, "model": deployment.bundle}
            frame = wire.make("rollback", **fields, version=before) if before else wire.make("undeploy", **fields)
            future = run.undoing[target.device_id] = loop.create_future()
            try:
                await self.hub.send(target.device_id, frame)
            except EdgeOffline:
                run.undoing.pop(target.device_id, None)
                future.set_result(None)
            asked.append((target, before, future))
        if asked:
            await asyncio.wait([f for _, _, f in asked], timeout=self.ack_timeout)
        rolled_back = 0
        for target, before, future in asked:
            answer = future.result() if future.done() else None
            run.undoing.pop(target.device_id, None)
            if answer is not None and answer.t == "ack":
                done = f"rolled back to {before}" if before else "undeployed: it ran no earlier version"
                self._set(deployment.id, target.device_id, "rolled_back", _note(target.reason, done))
                rolled_back += 1
            else:
                why = f"{answer.get('code')}: {answer['reason']}" if answer is not None else "no answer"
                self._set(deployment.id, target.device_id, target.state,
                          _note(target.reason, f"the rollback after the abort failed ({why})"))
        return rolled_back

    # --- after: retry and roll back ----------------------------------------------------------------
    async def retry_failed(self, deployment_id: str | int, by: str) -> str:
        deployment = self._require(deployment_id)
        if deployment.state in ("running", "pending"):
            raise Conflict(f"deployment {deployment.id} is still running: cancel or abort it first")
        failed = [t.device_id for t in self.registry.deployment_targets(deployment.id, state="failed")]
        if not failed:
            raise Conflict(f"no device failed in deployment {deployment.id}")
        return await self.start(deployment.action, deployment.bundle, deployment.version, failed,
                                selection=f"the devices that failed in deployment {deployment.id}",
                                requested_by=by, waves=1, failure_threshold=1.0)

    async def roll_back(self, deployment_id: str | int, by: str) -> str:
        deployment = self._require(deployment_id)
        if deployment.action != "deploy":
            raise BadRequest(f"deployment {deployment.id} is a {deployment.action}: only a deploy is rolled back")
        if deployment.state in ("running", "pending"):
            raise Conflict(f"deployment {deployment.id} is still running: abort it with rollback instead")
        versions = self.registry.model_versions([t.device_id for t in self.registry.deployment_targets(deployment.id)])
        switched = sorted(device for device, models in versions.items()
                          if (mv := models.get(deployment.bundle)) is not None and mv.version == deployment.version)
        if not switched:
            raise Conflict(f"no device runs version {deployment.version} of {deployment.bundle} from deployment "
                           f"{deployment.id} any more")
        return await self.start("rollback", deployment.bundle, None, switched,
                                selection=f"the devices deployment {deployment.id} brought {deployment.version} to",
                                requested_by=by, waves=1, failure_threshold=1.0)


def preflight_lines(found: dict) -> list[str]:
    """A preflight as `explain deploy …` prints it."""
    c = found["counts"]
    lines = [f"preflight: {found['selected']} selected · {c['install']} install · {c['wait']} wait (offline) · "
             f"{c['skip']} skip · {c['already']} already there · {c['likely_to_fail']} likely to fail"]
    for reason, count in found["skip_reasons"].items():
        lines.append(f"  skip ({count}): {reason}")
    for device in found["devices"]["likely_to_fail"]:
        lines.append(f"  likely to fail: {device['id']} refused this change before: {device['reason']}")
    return lines
