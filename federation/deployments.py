"""Deployments: a model bundle (or a rollback, or an undeploy) rolled out to selected devices.

    manager = app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib-anomaly", "1.2.0", ["wl-1", "wl-2"],
                              selection="region(e) = 'US'", requested_by="deploy#3", waves=2,
                              failure_threshold=0.2)
    manager.progress(did)        # {id, action, model, version, state, counts{…}, devices: [{id, state, reason, variant}]}
    await manager.wait(did, 30)  # when finished, or when only offline devices are still pending

How a rollout goes:
- every device gets a target in the registry: `skipped` (with the reason) when it cannot take the
  change — unknown, the bundle does not fit the capabilities it announced (`bundle_fit`; the best
  fitting variant is chosen otherwise), the model is not there to roll back or undeploy — `done`
  when it already runs the wanted version, else `pending`;
- pending targets go out in waves (contiguous groups in id order); a wave sends to the devices
  online now (`sending`) and waits until each has answered with `ack` (`done`) or `nack`
  (`failed`, with the edge's reason), or has not answered within `deploy_ack_timeout_s`
  (`failed`), or has dropped its link (`pending` again);
- after a wave, if more than `failure_threshold` of the devices answered so far failed, the rest
  is not sent: their targets become `skipped` ("rollout aborted …") and the deployment `aborted`;
- devices offline during their wave stay `pending` and get theirs when they reconnect (the hub
  tells the manager); the deployment stays `running` until none is pending, then `done` (or
  `failed` when every device that answered failed);
- which version runs where is recorded from what acks and nacks say is active (`active`), so the
  registry follows the devices, rollbacks included.
A federation restart resumes running deployments: `sending` targets are pending again and are
resent (the `did` makes that idempotent on the edge).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from federation.errors import BadRequest, NotFound
from federation.hub import EdgeHub, EdgeOffline
from federation.registry import DEPLOYMENT_ACTIONS, Deployment, DeploymentTarget, NewTarget, Registry
from streamql import models, wire
from streamql.errors import ModelError

log = logging.getLogger("streamql.federation.deployments")

FINISHED = ("done", "aborted", "failed", "cancelled")
TARGET_COUNTS = ("pending", "sending", "done", "skipped", "failed")


def did_of(deployment: Deployment) -> str:
    """The deployment id edges see: unique across registries, so a fresh federation reusing the
    number 1 is never taken by an edge for a deployment it already did."""
    return f"d{deployment.id}-{int(deployment.created * 1000):x}"


def deployment_number(did: str) -> int | None:
    head = did.split("-", 1)[0]
    return int(head[1:]) if head.startswith("d") and head[1:].isdigit() else None


def capabilities_for_fit(capabilities: dict) -> dict:
    """What `bundle_fit` reads: signals as names (an edge announces them as descriptions)."""
    out = dict(capabilities or {})
    if "signals" in out:
        out["signals"] = [s.get("name") if isinstance(s, dict) else s for s in out["signals"] or []]
    return out


class _Bundle:
    """A bundle read once per deployment, with its deploy frames encoded once per variant choice."""

    def __init__(self, name: str, version: str, data: bytes):
        self.name, self.version, self.data = name, version, data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.parsed = models.read_bundle(data)
        self._frames: dict[tuple[str, ...], list[bytes]] = {}

    def fit(self, capabilities: dict) -> models.BundleFit:
        return models.bundle_fit(self.parsed, capabilities_for_fit(capabilities))

    def frames(self, did: str, variants: tuple[str, ...]) -> list[bytes]:
        found = self._frames.get(variants)
        if found is None:
            size, step = len(self.data), wire.DEPLOY_CHUNK_BYTES
            chunks = max(1, math.ceil(size / step))
            extra: dict[str, Any] = {"variants": list(variants)} if variants else {}
            if self.parsed.requirements:
                extra["requirements"] = self.parsed.requirements
            found = [wire.encode(wire.make("deploy", did=did, model=self.name, version=self.version,
                                           sha256=self.sha256, size=size, chunk=i, chunks=chunks,
                                           data=self.data[i * step:(i + 1) * step], **extra))
                     for i in range(chunks)]
            self._frames[variants] = found
        return found


def _variant_label(fit: models.BundleFit) -> tuple[str | None, tuple[str, ...]]:
    chosen = {m: v for m, v in fit.variants().items() if v is not None}
    if not chosen:
        return None, ()
    label = next(iter(chosen.values())) if len(chosen) == 1 else ", ".join(f"{m}: {v}" for m, v in chosen.items())
    return label, tuple(chosen.values())


class _Run:
    """What the manager keeps in memory about a running deployment."""

    def __init__(self, deployment: Deployment, bundle: _Bundle | None):
        self.deployment = deployment
        self.did = did_of(deployment)
        self.bundle = bundle
        self.current_wave = int(deployment.waves.get("current", 0) or 0)
        self.changed = asyncio.Event()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.sending: set[str] = set()  # devices sent to (or being sent to) that have not answered
        self.task: asyncio.Task | None = None
        self.rolled_out = False  # every wave has been sent (or the rollout aborted)

    def poke(self) -> None:
        self.changed.set()


class DeploymentManager:
    """Creates deployments and drives them; the hub's observer for connects and ack/nack."""

    def __init__(self, registry: Registry, hub: EdgeHub, *, ack_timeout: float = 120.0, default_waves: int = 1,
                 default_failure_threshold: float = 0.5, concurrency: int = 64, metrics=None):
        self.registry, self.hub = registry, hub
        self.ack_timeout = ack_timeout
        self.default_waves, self.default_failure_threshold = default_waves, default_failure_threshold
        self._send_slots = asyncio.Semaphore(max(1, concurrency))
        self._runs: dict[int, _Run] = {}
        self._closed = False
        self.m_replies = None
        if metrics is not None:
            self.m_replies = metrics.counter("streamql_deployment_replies_total",
                                             "Answers of devices to deployments, by kind.", ("reply",))

    # --- lifetime --------------------------------------------------------------------------------
    async def resume(self) -> int:
        """Pick up deployments a previous run of the federation left running."""
        resumed = 0
        for deployment in self.registry.list_deployments(state="running", limit=100_000) + \
                self.registry.list_deployments(state="pending", limit=100_000):
            self.registry.move_targets(deployment.id, ("sending",), "pending", "resent after a federation restart")
            try:
                bundle = self._load_bundle(deployment.action, deployment.bundle, deployment.version)
            except (NotFound, ModelError, RuntimeError, OSError) as exc:
                self._finish_with(deployment.id, "failed", f"cannot resume: {exc}")
                continue
            self._launch(deployment, bundle)
            resumed += 1
        return resumed

    async def close(self) -> None:
        self._closed = True
        for run in list(self._runs.values()):
            for timer in run.timers.values():
                timer.cancel()
            if run.task is not None:
                run.task.cancel()
        for run in list(self._runs.values()):
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task

    # --- the API ---------------------------------------------------------------------------------
    async def start(self, action: str, model: str, version: str | None, device_ids: list[str], *,
                    selection: str, requested_by: str | None = None, waves: int | None = None,
                    failure_threshold: float | None = None) -> str:
        """Create a deployment for these devices and start rolling it out; returns its id."""
        if action not in DEPLOYMENT_ACTIONS:
            raise BadRequest(f"unknown deployment action {action!r}: one of {', '.join(DEPLOYMENT_ACTIONS)}")
        if not isinstance(model, str) or not 0 < len(model) <= 256:
            raise BadRequest("a model name is a non-empty string of at most 256 characters")
        waves = self.default_waves if waves is None else int(waves)
        threshold = self.default_failure_threshold if failure_threshold is None else float(failure_threshold)
        if waves < 1:
            raise BadRequest("a rollout has at least one wave")
        if not 0.0 <= threshold <= 1.0:
            raise BadRequest("the failure threshold is a fraction between 0 and 1")
        bundle = self._load_bundle(action, model, version)
        if bundle is not None:
            version = bundle.version
        targets = self._plan_targets(action, model, version, bundle, list(dict.fromkeys(device_ids)))
        sendable = [t for t in targets if t.state == "pending"]
        count = max(1, min(waves, len(sendable)))
        per_wave = math.ceil(len(sendable) / count) if sendable else 0
        planned, position = [], 0
        for target in targets:
            if target.state == "pending":
                planned.append(target._replace(wave=1 + position // per_wave))
                position += 1
            else:
                planned.append(target)
        deployment = self.registry.create_deployment(
            action, model, version, selection, planned, waves={"count": count, "current": 0},
            failure_threshold=threshold, created_by=requested_by or "", state="running")
        self._launch(deployment, bundle)
        return str(deployment.id)

    def progress(self, deployment_id: str | int) -> dict:
        deployment = self._require(deployment_id)
        targets = self.registry.deployment_targets(deployment.id)
        counts = dict.fromkeys(TARGET_COUNTS, 0)
        for target in targets:
            counts[target.state] = counts.get(target.state, 0) + 1
        run = self._runs.get(deployment.id)
        online = self.hub.online_ids()
        waiting_offline = sum(1 for t in targets if t.state == "pending" and t.device_id not in online)
        return {
            "id": str(deployment.id), "action": deployment.action, "model": deployment.bundle,
            "version": deployment.version, "selection": deployment.selection, "state": deployment.state,
            "created": deployment.created, "updated": deployment.updated, "requested_by": deployment.created_by,
            "waves": deployment.waves, "failure_threshold": deployment.failure_threshold, "counts": counts,
            "waiting_for_offline": waiting_offline,
            "settled": deployment.state in FINISHED or (
                (run is None or run.rolled_out) and counts["sending"] == 0 and waiting_offline == counts["pending"]),
            "devices": [{"id": t.device_id, "state": t.state, "reason": t.reason, "variant": t.variant,
                         "wave": t.wave, "updated": t.updated} for t in targets],
        }

    async def wait(self, deployment_id: str | int, timeout: float | None = None) -> dict:
        """The progress once the deployment is finished, or is only waiting for offline devices
        (`settled`); after `timeout` seconds, the progress as it is."""
        deployment = self._require(deployment_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            progress = self.progress(deployment.id)
            if progress["settled"]:
                return progress
            run = self._runs.get(deployment.id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return progress
            if run is None:  # not ours to drive (another process): poll
                await asyncio.sleep(min(0.5, remaining) if remaining is not None else 0.5)
                continue
            run.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(run.changed.wait(), None if remaining is None else max(remaining, 0.001))

    # --- hub observer ----------------------------------------------------------------------------
    async def edge_connected(self, edge_id: str) -> None:
        """Send what waits for a device that just connected (within its deployment's current wave)."""
        for deployment, target in self.registry.open_targets_for(edge_id):
            run = self._runs.get(deployment.id)
            if run is None or run.task is None or target.wave > run.current_wave or target.state != "pending":
                continue
            await self._send(run, target)

    def edge_disconnected(self, edge_id: str) -> None:
        for run in self._runs.values():
            timer = run.timers.pop(edge_id, None)
            if timer is not None:
                timer.cancel()
            if edge_id in run.sending:
                run.sending.discard(edge_id)
                self.registry.move_targets(run.deployment.id, ("sending",), "pending",
                                           "the device disconnected before answering; resent when it is back",
                                           device_id=edge_id)
                run.poke()

    def edge_replied(self, edge_id: str, frame: wire.Frame) -> None:
        number = deployment_number(frame["did"])
        deployment = self.registry.get_deployment(number) if number is not None else None
        if deployment is None or did_of(deployment) != frame["did"]:
            log.info("%s answered %s for an unknown deployment %s", edge_id, frame.t, frame["did"])
            return
        model = frame.get("model") or deployment.bundle
        with contextlib.suppress(NotFound):
            self.registry.record_active_models(edge_id, {k: str(v) for k, v in frame["active"].items()}, only=model)
        if self.m_replies is not None:
            self.m_replies.inc(reply=frame.t)
        run = self._runs.get(deployment.id)
        if run is not None:
            timer = run.timers.pop(edge_id, None)
            if timer is not None:
                timer.cancel()
            run.sending.discard(edge_id)
        target = self.registry.deployment_target(deployment.id, edge_id)
        if target is None or target.state == "skipped":
            return
        if frame.t == "ack":
            self.registry.update_targets(deployment.id, [(edge_id, "done", frame.get("message"))])
        else:
            code = frame.get("code")
            reason = f"{code}: {frame['reason']}" if code else frame["reason"]
            self.registry.update_targets(deployment.id, [(edge_id, "failed", reason)])
        if run is not None:
            run.poke()
            if run.rolled_out:
                self._maybe_finish(run)

    # --- planning --------------------------------------------------------------------------------
    def _load_bundle(self, action: str, model: str, version: str | None) -> _Bundle | None:
        if action != "deploy":
            return None
        stored = self.registry.get_bundle(model, version)
        if stored is None:
            which = f"version {version!r} of " if version else ""
            raise NotFound(f"no bundle {which}model {model!r} has been uploaded (POST /v1/models)")
        return _Bundle(stored.name, stored.version, self.registry.bundle_data(stored))

    def _plan_targets(self, action: str, model: str, version: str | None, bundle: _Bundle | None,
                      device_ids: list[str]) -> list[NewTarget]:
        devices = {d.id: d for d in self.registry.get_devices(device_ids)}
        running = self.registry.model_versions(list(devices))
        out = []
        for device_id in device_ids:
            device = devices.get(device_id)
            if device is None:  # deleted since it was selected: nothing to record it against
                log.warning("device %s is not registered: left out of the deployment", device_id)
                continue
            current = running.get(device_id, {}).get(model)
            if action == "deploy":
                announced = self.hub.announced(device_id)
                capabilities = announced["capabilities"] if announced else device.capabilities
                fit = bundle.fit(capabilities)
                if not fit.ok:
                    out.append(NewTarget(device_id, "skipped", fit.reason or "the bundle does not fit the device"))
                    continue
                label, _ = _variant_label(fit)
                if current is not None and current.version == version:
                    out.append(NewTarget(device_id, "done", f"already running version {version}", label))
                else:
                    out.append(NewTarget(device_id, "pending", None, label))
            elif current is None:
                out.append(NewTarget(device_id, "skipped", f"model {model!r} is not deployed there"))
            elif action == "rollback" and version is not None and current.version == version:
                out.append(NewTarget(device_id, "done", f"already running version {version}"))
            else:  # a rollback without a recorded previous version still goes: the edge may know older ones
                out.append(NewTarget(device_id, "pending", None))
        return out

    # --- the rollout -----------------------------------------------------------------------------
    def _launch(self, deployment: Deployment, bundle: _Bundle | None) -> None:
        run = _Run(deployment, bundle)
        self._runs[deployment.id] = run
        run.task = self.hub.spawn(self._rollout(run), name=f"deployment-{deployment.id}")

    async def _rollout(self, run: _Run) -> None:
        deployment = run.deployment
        count = int(deployment.waves.get("count", 1) or 1)
        try:
            for wave in range(max(1, run.current_wave), count + 1):
                run.current_wave = wave
                self.registry.update_deployment(deployment.id, waves={"count": count, "current": wave})
                pending = [t for t in self.registry.deployment_targets(deployment.id, state="pending") if t.wave <= wave]
                online = self.hub.online_ids()
                await asyncio.gather(*(self._send(run, t) for t in pending if t.device_id in online))
                await self._wave_answered(run, wave)
                if wave < count and self._over_threshold(run):
                    self._abort(run, wave)
                    return
            run.rolled_out = True
            self._maybe_finish(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("deployment %s failed", deployment.id)
            self._finish_with(deployment.id, "failed", "the rollout failed inside the federation")
        finally:
            run.poke()

    async def _wave_answered(self, run: _Run, wave: int) -> None:
        """Until no device sent to so far (this wave or, reconnected, an earlier one) owes an answer."""
        while run.sending:
            run.changed.clear()
            await run.changed.wait()

    def _over_threshold(self, run: _Run) -> bool:
        counts = self.registry.target_counts(run.deployment.id)
        answered = counts.get("done", 0) + counts.get("failed", 0)
        return answered > 0 and counts.get("failed", 0) / answered > run.deployment.failure_threshold

    def _abort(self, run: _Run, wave: int) -> None:
        counts = self.registry.target_counts(run.deployment.id)
        failed, answered = counts.get("failed", 0), counts.get("done", 0) + counts.get("failed", 0)
        reason = (f"not sent: the rollout was aborted after wave {wave} ({failed} of {answered} devices failed, "
                  f"more than the threshold of {run.deployment.failure_threshold:g})")
        self.registry.move_targets(run.deployment.id, ("pending",), "skipped", reason)
        run.rolled_out = True
        self._finish_with(run.deployment.id, "aborted", None)
        log.warning("deployment %s aborted after wave %d: %d of %d failed", run.deployment.id, wave, failed, answered)

    def _maybe_finish(self, run: _Run) -> None:
        counts = self.registry.target_counts(run.deployment.id)
        if counts.get("pending", 0) or counts.get("sending", 0):
            return
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        self._finish_with(run.deployment.id, "failed" if failed and not done else "done", None)

    def _finish_with(self, deployment_id: int, state: str, reason: str | None) -> None:
        if reason is not None:
            self.registry.move_targets(deployment_id, ("pending", "sending"), "failed", reason)
        self.registry.update_deployment(deployment_id, state=state)
        run = self._runs.pop(deployment_id, None)
        if run is not None:
            for timer in run.timers.values():
                timer.cancel()
            run.timers.clear()
            run.poke()

    async def _send(self, run: _Run, target: DeploymentTarget) -> None:
        """Send one device its deploy chunks, rollback or undeploy; then wait for its answer."""
        edge = target.device_id
        deployment = run.deployment
        if edge in run.sending:
            return
        run.sending.add(edge)
        self.registry.update_targets(deployment.id, [(edge, "sending", None)])
        try:
            async with self._send_slots:
                if deployment.action == "deploy":
                    fit_variants = self._variants_for(run, target)
                    for data in run.bundle.frames(run.did, fit_variants):
                        await self.hub.send(edge, data)
                elif deployment.action == "rollback":
                    fields = {"did": run.did, "model": deployment.bundle}
                    if deployment.version is not None:
                        fields["version"] = deployment.version
                    await self.hub.send(edge, wire.make("rollback", **fields))
                else:
                    await self.hub.send(edge, wire.make("undeploy", did=run.did, model=deployment.bundle))
        except EdgeOffline:
            run.sending.discard(edge)
            self.registry.update_targets(deployment.id, [(edge, "pending", "the device went offline; resent when "
                                                                           "it is back")])
            run.poke()
            return
        if deployment.id not in self._runs or edge not in run.sending:
            return  # finished, or answered already
        loop = asyncio.get_running_loop()
        previous = run.timers.pop(edge, None)
        if previous is not None:
            previous.cancel()
        run.timers[edge] = loop.call_later(self.ack_timeout, self._timed_out, run, edge)

    def _variants_for(self, run: _Run, target: DeploymentTarget) -> tuple[str, ...]:
        announced = self.hub.announced(target.device_id)
        if announced is None:
            device = self.registry.get_device(target.device_id)
            capabilities = device.capabilities if device else {}
        else:
            capabilities = announced["capabilities"]
        fit = run.bundle.fit(capabilities)
        return _variant_label(fit)[1] if fit.ok else ()

    def _timed_out(self, run: _Run, edge: str) -> None:
        run.timers.pop(edge, None)
        run.sending.discard(edge)
        moved = self.registry.move_targets(run.deployment.id, ("sending",), "failed",
                                           f"no answer within {self.ack_timeout:g} s", device_id=edge)
        if moved:
            run.poke()
            if run.rolled_out:
                self._maybe_finish(run)

    def _require(self, deployment_id: str | int) -> Deployment:
        try:
            number = int(deployment_id)
        except (TypeError, ValueError):
            raise BadRequest("a deployment id is an integer") from None
        deployment = self.registry.get_deployment(number)
        if deployment is None:
            raise NotFound(f"no deployment {number}")
        return deployment

    def running(self) -> Iterable[int]:
        return list(self._runs)
