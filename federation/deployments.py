"""Deployments: a model bundle (or a rollback, or an undeploy) rolled out to selected devices, in waves.

    manager = app[DEPLOYMENTS]
    did = await manager.start("deploy", "vib-anomaly", "1.2.0", ["wl-1", "wl-2"],
                              selection="region(e) = 'US'", requested_by="deploy#3",
                              rollout=statement.rollout)     # or waves=2, failure_threshold=0.2
    manager.progress(did)        # {id, action, model, version, state, counts, waves{…, list}, abort, devices}
    await manager.wait(did, 30)  # when finished, or when only offline devices are still pending

How a rollout goes (docs/models.md, Rollouts; the arithmetic is in federation/rollout.py):
- every device gets a target: `skipped` (with the reason) when it cannot take the change —
  unknown, the bundle does not fit the capabilities it announced (`bundle_fit`; the best fitting
  variant is chosen otherwise), the model is not there to roll back or undeploy — `done` when it
  already runs the wanted version, else `pending`;
- pending targets are split into waves (contiguous groups in the order given). A wave sends to
  its devices online now (`sending`) and waits, up to the wave timeout, until each has finished:
  `nack` → `failed` (the edge's reason); `ack` → `installed`, then `done` once a health frame
  shows the bundle active, its models loaded and its autostart queries running, and none failed
  for `settle_s` seconds — `failed` when one did, or when the timeout came first. A device whose
  link drops is `pending` again; one that is offline stays `pending`, gets its change when it
  reconnects and never holds a wave past its timeout (the wave lists it as offline);
- after each wave but the last, if more than the threshold's share of the devices the wave
  finished have failed, the rollout aborts: the rest is `skipped` ("rollout aborted …"), and with
  `rollback on abort` every device that switched to the new version goes back to the version it
  ran before (or loses the bundle when it ran none): `rolled_back`. The deployment is `aborted`;
- otherwise it is `done` once no device is pending (`failed` when every device that answered
  failed); it stays `running` — and `settled` — while only offline devices wait;
- which version runs where is recorded from what acks and nacks say is active (`active`), so the
  registry follows the devices, rollbacks included.
A federation restart resumes running deployments: `sending` and `installed` targets are pending
again and are resent (the `did` makes that idempotent on the edge).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from federation.deploy_frames import OutgoingBundle, deployment_number, did_of, variant_label
from federation.deploy_sending import DeploymentSending
from federation.deployment_control import UNDO, DeploymentControl
from federation.errors import BadRequest, NotFound
from federation.hub import EdgeHub
from federation.registry import DEPLOYMENT_ACTIONS, TARGET_STATES, Deployment, NewTarget, Registry
from federation.rollout import FAILED, HEALTHY, RolloutDefaults, RolloutPolicy, exceeds, health_verdict, policy_for
from streamql import ast as A
from streamql import wire
from streamql.errors import ModelError

log = logging.getLogger("streamql.federation.deployments")

FINISHED = ("done", "aborted", "failed", "cancelled", "nothing_selected")
TARGET_COUNTS = TARGET_STATES
IN_FLIGHT = ("sending", "installed")


WAVE_RECOUNT_S = 0.25   # how often a running wave looks at its targets while answers arrive
# a deployment sends to this many devices at most before they answer: each device's ack timer starts
# when its frame went out, and on NATS that frame is small (the edge fetches the bundle itself), so
# 10,000 went out in seconds while the simulated fleet fetched ~25 bundles a second — 5,833 timed
# out unanswered after 120 s (bench/README.md, scale)
IN_FLIGHT_WINDOW = 1000

class _Run:
    """What the manager keeps in memory about a running deployment."""

    def __init__(self, deployment: Deployment, bundle: OutgoingBundle | None, policy: RolloutPolicy):
        self.deployment = deployment
        self.did = did_of(deployment)
        self.bundle = bundle
        self.policy = policy
        self.waves = dict(deployment.waves)   # count, current, sizes, policy, list (per wave), abort
        self.current_wave = int(self.waves.get("current", 0) or 0)
        self.changed = asyncio.Event()
        self.timers: dict[str, asyncio.TimerHandle] = {}   # per device: no answer, or not healthy, in time
        self.sending: set[str] = set()      # sent to (or being sent to), not answered yet
        self.awaiting: dict[str, None] = {}  # of them, those whose frames went out (the window counts them)
        self.room = asyncio.Event()          # set when one of them answered, gave up or left
        self.sent_at: dict[str, float] = {}
        self.watching: dict[str, dict] = {}  # acked, waiting for health: {expected, why, settle}
        self.undoing: dict[str, asyncio.Future] = {}
        self.task: asyncio.Task | None = None
        self.rolled_out = False  # every wave has been sent (or the rollout aborted)

    def poke(self) -> None:
        self.changed.set()

    def settle(self, edge: str) -> None:
        """The device is no longer in flight (answered, given up on, gone): its place in the window is free."""
        self.sending.discard(edge)
        if self.awaiting.pop(edge, 0) is None:
            self.room.set()

    def stop_watching(self, edge: str) -> dict | None:
        timer = self.timers.pop(edge, None)
        if timer is not None:
            timer.cancel()
        watch = self.watching.pop(edge, None)
        if watch is not None and watch["settle"] is not None:
            watch["settle"].cancel()
        return watch

    def close(self) -> None:
        for edge in list(self.timers) + list(self.watching):
            self.stop_watching(edge)
        for future in self.undoing.values():
            if not future.done():
                future.set_result(None)
        self.undoing.clear()


class DeploymentManager(DeploymentControl, DeploymentSending):
    """Creates deployments and drives them; the hub's observer for connects, ack/nack and health.
    Operator actions (preflight, cancel, abort, retry, rollback) are in federation/deployment_control.py."""

    def __init__(self, registry: Registry, hub: EdgeHub, *, ack_timeout: float = 120.0,
                 defaults: RolloutDefaults | None = None, settle_s: float = 5.0, concurrency: int = 64,
                 in_flight: int = IN_FLIGHT_WINDOW, metrics=None):
        self.registry, self.hub = registry, hub
        self.ack_timeout = ack_timeout
        self.defaults = defaults or RolloutDefaults()
        self.settle_s = settle_s    # how long a device must look healthy before it counts as healthy
        self.concurrency = max(1, concurrency)   # devices sent to at once, all deployments together
        self._send_slots = asyncio.Semaphore(self.concurrency)
        self.in_flight = max(1, in_flight)   # devices of a deployment sent to and not answered yet, at most
        self._runs: dict[int, _Run] = {}
        self._closed = False
        self.m_replies = None
        if metrics is not None:
            self.m_replies = metrics.counter("streamql_deployment_replies_total",
                                             "Answers of devices to deployments, by kind.", ("reply",))

    # --- lifetime --------------------------------------------------------------------------------
    async def resume(self, *, orphans_only: bool = False) -> int:
        """Pick up deployments a previous run of the federation left running. On a shared
        registry, only those no live node drives (`claim_deployment`): also what a node that
        died was driving, which is how another node finishes its rollout. `orphans_only` leaves
        alone what this node holds without driving (created here by someone else than us)."""
        resumed = 0
        for deployment in self.registry.list_deployments(state="running", limit=100_000) + \
                self.registry.list_deployments(state="pending", limit=100_000):
            if deployment.id in self._runs or self._closed:
                continue
            if orphans_only and self.registry.holds_deployment(deployment.id):
                continue
            if not self.registry.claim_deployment(deployment.id):
                continue
            self.registry.move_targets(deployment.id, IN_FLIGHT, "pending", "resent after a federation restart")
            try:
                bundle = self._load_bundle(deployment.action, deployment.bundle, deployment.version)
            except (NotFound, ModelError, RuntimeError, OSError) as exc:
                self._finish_with(deployment.id, "failed", f"cannot resume: {exc}")
                continue
            self._launch(deployment, bundle)
            resumed += 1
        return resumed

    async def take_over(self) -> int:
        """A shared registry's periodic check: stop driving what we no longer hold (our link to the
        database was lost and another node may have it), then claim what nobody drives."""
        for deployment_id, run in list(self._runs.items()):
            if not self.registry.holds_deployment(deployment_id):
                log.warning("deployment %s: this node no longer holds its rollout lock; stopping here", deployment_id)
                self._runs.pop(deployment_id, None)
                run.close()
                if run.task is not None:
                    run.task.cancel()
        return await self.resume(orphans_only=True)

    async def close(self) -> None:
        self._closed = True
        for run in list(self._runs.values()):
            run.close()
            if run.task is not None:
                run.task.cancel()
        for run in list(self._runs.values()):
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task

    # --- the API ---------------------------------------------------------------------------------
    async def start(self, action: str, model: str, version: str | None, device_ids: list[str], *,
                    selection: str, requested_by: str | None = None, waves: int | None = None,
                    failure_threshold: float | None = None, rollout: A.Rollout | None = None) -> str:
        """Create a deployment for these devices and start rolling it out; returns its id.
        `rollout` is the statement's options; `waves` and `failure_threshold` (a fraction) say the
        same for callers without one. What neither says comes from the defaults."""
        if action not in DEPLOYMENT_ACTIONS:
            raise BadRequest(f"unknown deployment action {action!r}: one of {', '.join(DEPLOYMENT_ACTIONS)}")
        if not isinstance(model, str) or not 0 < len(model) <= 256:
            raise BadRequest("a model name is a non-empty string of at most 256 characters")
        policy = policy_for(action, rollout, self.defaults, waves=waves, threshold=failure_threshold)
        if policy.waves is not None and policy.waves < 1:
            raise BadRequest("a rollout has at least one wave")
        if not 0.0 <= policy.threshold <= 1.0:
            raise BadRequest("the failure threshold is a fraction between 0 and 1")
        if not policy.timeout_s > 0:
            raise BadRequest("a wave timeout is a positive number of seconds")
        if policy.rollback_on_abort and action != "deploy":
            raise BadRequest(f"`rollback on abort` undoes a deploy; a {action} cannot be rolled back that way")
        bundle = self._load_bundle(action, model, version)
        if bundle is not None:
            version = bundle.version
        targets = self._plan_targets(action, model, version, bundle, list(dict.fromkeys(device_ids)))
        if not targets:   # neither done nor failed: there was nothing to do
            deployment = self.registry.create_deployment(
                action, model, version, selection, [], waves={"count": 0, "current": 0, "sizes": [],
                                                              "policy": policy.to_dict(), "list": [], "abort": None},
                failure_threshold=policy.threshold, created_by=requested_by or "", state="nothing_selected")
            return str(deployment.id)
        sizes = policy.wave_sizes(sum(1 for t in targets if t.state == "pending"))
        numbers = iter(wave for wave, size in enumerate(sizes, 1) for _ in range(size))
        planned = [t._replace(wave=next(numbers)) if t.state == "pending" else t for t in targets]
        record = {"count": len(sizes), "current": 0, "sizes": sizes, "policy": policy.to_dict(),
                  "list": [{"wave": i, "state": "waiting"} for i in range(1, len(sizes) + 1)], "abort": None}
        deployment = self.registry.create_deployment(
            action, model, version, selection, planned, waves=record, failure_threshold=policy.threshold,
            created_by=requested_by or "", state="running")
        self.registry.claim_deployment(deployment.id)   # new: nobody else can hold it yet
        self._launch(deployment, bundle)
        return str(deployment.id)

    def progress(self, deployment_id: str | int, *, device_state: tuple[str, ...] | None = None,
                 device_limit: int | None = None, device_offset: int = 0) -> dict:
        """Counts, waves and devices; `device_state`, `device_limit` and `device_offset` choose which
        devices are listed (`devices_total` says how many match)."""
        deployment = self._require(deployment_id)
        # counted by the registry; devices listed only when asked for (a progress request, or a
        # waiter's look, must not list 10,000 targets while their answers arrive)
        by_wave = {wave: Counter(states) for wave, states in self.registry.wave_counts(deployment.id).items()}
        counts = dict.fromkeys(TARGET_COUNTS, 0)
        for states in by_wave.values():
            for state, count in states.items():
                counts[state] = counts.get(state, 0) + count
        run = self._runs.get(deployment.id)
        waiting_offline = 0
        if counts["pending"]:
            online = self.hub.online_ids()
            waiting_offline = sum(1 for t in self.registry.deployment_targets(deployment.id, state="pending")
                                  if t.device_id not in online)
        record = run.waves if run is not None else deployment.waves
        policy = RolloutPolicy.from_dict(record.get("policy"), RolloutPolicy(threshold=deployment.failure_threshold))
        waves = {"count": record.get("count", 1), "current": record.get("current", 0), "sizes": record.get("sizes"),
                 "timeout_s": policy.timeout_s, "rollback_on_abort": policy.rollback_on_abort,
                 "list": [{**wave, "devices": sum(by_wave.get(wave["wave"], Counter()).values()),
                           **{state: by_wave.get(wave["wave"], Counter())[state] for state in TARGET_COUNTS}}
                          for wave in record.get("list") or ()]}
        return {
            "id": str(deployment.id), "action": deployment.action, "model": deployment.bundle,
            "version": deployment.version, "selection": deployment.selection, "state": deployment.state,
            "created": deployment.created, "updated": deployment.updated, "requested_by": deployment.created_by,
            "waves": waves, "abort": record.get("abort"), "failure_threshold": deployment.failure_threshold,
            "counts": counts, "waiting_for_offline": waiting_offline,
            "settled": deployment.state in FINISHED or (
                (run is None or run.rolled_out) and not any(counts[s] for s in IN_FLIGHT)
                and waiting_offline == counts["pending"] and (record.get("abort") or {}).get("rollback") != "running"),
            "cancel": record.get("cancel"),
            "devices_total": sum(n for state, n in counts.items() if device_state is None or state in device_state),
            "devices": [] if device_limit == 0 else self._listed(deployment.id, device_state, device_limit, device_offset),
        }

    def _listed(self, deployment_id: int, device_state: tuple[str, ...] | None, limit: int | None,
                offset: int) -> list[dict]:
        listed = [t for t in self.registry.deployment_targets(deployment_id)
                  if device_state is None or t.state in device_state]
        return [{"id": t.device_id, "state": t.state, "reason": t.reason, "variant": t.variant, "wave": t.wave,
                 "updated": t.updated} for t in listed[offset:None if limit is None else offset + limit]]

    async def wait(self, deployment_id: str | int, timeout: float | None = None, **listing: Any) -> dict:
        """The progress once the deployment is finished, or is only waiting for offline devices
        (`settled`); after `timeout` seconds, the progress as it is. `listing`: which devices it
        lists (progress's `device_state`, `device_limit`, `device_offset`)."""
        deployment = self._require(deployment_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            progress = self.progress(deployment.id, device_limit=0)
            if progress["settled"]:
                return self.progress(deployment.id, **listing)
            run = self._runs.get(deployment.id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return self.progress(deployment.id, **listing)
            if run is None:  # not ours to drive (another process): poll
                await asyncio.sleep(min(0.5, remaining) if remaining is not None else 0.5)
                continue
            run.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(run.changed.wait(), None if remaining is None else max(remaining, 0.001))
            if run.task is not None and not run.task.done():   # answers arrive together: one look for them
                await asyncio.sleep(WAVE_RECOUNT_S if deadline is None
                                    else min(WAVE_RECOUNT_S, max(0.0, deadline - time.monotonic())))

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
            undo = run.undoing.pop(edge_id, None)
            if undo is not None and not undo.done():
                undo.set_result(None)
            watched = run.stop_watching(edge_id) is not None
            if edge_id in run.sending or watched:
                run.settle(edge_id)
                self.registry.move_targets(run.deployment.id, IN_FLIGHT, "pending",
                                           "the device disconnected before it had finished; resent when it is back",
                                           device_id=edge_id)
                run.poke()

    def edge_replied(self, edge_id: str, frame: wire.Frame) -> None:
        did = frame["did"]
        undo = did.endswith(UNDO)
        number = deployment_number(did)
        run = self._runs.get(number) if number is not None else None
        # the deployment we drive is in memory (its record, waves included, is not read per answer)
        deployment = run.deployment if run is not None else \
            self.registry.get_deployment(number) if number is not None else None
        if deployment is None or did_of(deployment) != (did[:-len(UNDO)] if undo else did):
            log.info("%s answered %s for an unknown deployment %s", edge_id, frame.t, did)
            return
        with self.registry.transaction():   # what runs there and the target's state: one commit
            self._replied(edge_id, frame, deployment, run, undo)
        if run is not None and not undo:    # committed: a deployment it finishes is seen finished
            run.poke()
            if run.rolled_out:
                self._maybe_finish(run)

    def _replied(self, edge_id: str, frame: wire.Frame, deployment: Deployment, run: _Run | None, undo: bool) -> None:
        model = frame.get("model") or deployment.bundle
        with contextlib.suppress(NotFound):
            self.registry.record_active_models(edge_id, {k: str(v) for k, v in frame["active"].items()}, only=model)
        if self.m_replies is not None:
            self.m_replies.inc(reply=frame.t)
        if undo:
            future = run.undoing.pop(edge_id, None) if run is not None else None
            if future is not None and not future.done():
                future.set_result(frame)
            return
        if run is not None:
            run.stop_watching(edge_id)
            run.settle(edge_id)
        target = self.registry.deployment_target(deployment.id, edge_id)
        if target is None or target.state in ("skipped", "rolled_back"):
            return
        if frame.t == "nack":
            code = frame.get("code")
            self._set(deployment.id, edge_id, "failed", f"{code}: {frame['reason']}" if code else frame["reason"])
        elif run is None or not frame.get("autostart") or deployment.action == "undeploy":
            # nothing left to watch (or an older edge that does not say what): the ack is the answer
            self._set(deployment.id, edge_id, "done", frame.get("message"))
        else:
            self._set(deployment.id, edge_id, "installed", "installed; waiting for its health report")
            expected = {"model": model, "version": frame.get("version"), "autostart": list(frame["autostart"]),
                        "loaded": dict(frame.get("loaded") or {})}
            run.watching[edge_id] = {"expected": expected, "why": "no health report yet", "settle": None}
            loop = asyncio.get_running_loop()
            left = run.sent_at.get(edge_id, time.monotonic()) + run.policy.timeout_s - time.monotonic()
            run.timers[edge_id] = loop.call_later(max(0.0, left), self._give_up, run, edge_id)

    def edge_health(self, edge_id: str, health: dict) -> None:
        """A health frame: devices that acked are healthy, failed, or not there yet."""
        for run in list(self._runs.values()):
            watch = run.watching.get(edge_id)
            if watch is None:
                continue
            verdict, why = health_verdict(watch["expected"], health)
            watch["why"] = why
            if verdict == FAILED:
                self._verdict(run, edge_id, "failed", why)
            elif verdict == HEALTHY and watch["settle"] is None:
                if self.settle_s <= 0:
                    self._verdict(run, edge_id, "done", None)
                else:   # a query may still fail on its first data: healthy only if it stays so
                    watch["settle"] = asyncio.get_running_loop().call_later(
                        self.settle_s, self._verdict, run, edge_id, "done", None)

    # --- planning --------------------------------------------------------------------------------
    def _load_bundle(self, action: str, model: str, version: str | None) -> OutgoingBundle | None:
        if action != "deploy":
            return None
        stored = self.registry.get_bundle(model, version)
        if stored is None:
            which = f"version {version!r} of " if version else ""
            raise NotFound(f"no bundle {which}model {model!r} has been uploaded (POST /v1/models)")
        return OutgoingBundle(stored.name, stored.version, self.registry.bundle_data(stored))

    def _plan_targets(self, action: str, model: str, version: str | None, bundle: OutgoingBundle | None,
                      device_ids: list[str]) -> list[NewTarget]:
        known = self.registry.known_device_ids(device_ids)
        # what a device announced is what it fits; the registry's record (decoded) only for the others
        announced = {d: a for d in known if (a := self.hub.announced(d)) is not None} if action == "deploy" else {}
        devices = {d.id: d for d in self.registry.get_devices([d for d in device_ids if d in known and d not in announced])}
        running = self.registry.model_versions([d for d in device_ids if d in known])
        out = []
        for device_id in device_ids:
            if device_id not in known:  # deleted since it was selected: nothing to record it against
                log.warning("device %s is not registered: left out of the deployment", device_id)
                continue
            current = running.get(device_id, {}).get(model)
            if action == "deploy":
                seen = announced.get(device_id)
                capabilities = seen["capabilities"] if seen else devices[device_id].capabilities
                fit = bundle.fit(capabilities)
                if not fit.ok:
                    out.append(NewTarget(device_id, "skipped", fit.reason or "the bundle does not fit the device"))
                    continue
                label, _ = variant_label(fit)
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
    def _launch(self, deployment: Deployment, bundle: OutgoingBundle | None) -> None:
        defaults = policy_for(deployment.action, None, self.defaults)
        policy = RolloutPolicy.from_dict(deployment.waves.get("policy"), defaults)
        run = _Run(deployment, bundle, policy)
        self._runs[deployment.id] = run
        run.task = self.hub.spawn(self._rollout(run), name=f"deployment-{deployment.id}")

    async def _rollout(self, run: _Run) -> None:
        deployment = run.deployment
        count = int(run.waves.get("count", 1) or 0)
        try:
            if run.waves.get("abort"):    # resumed in the middle of an abort
                await self._finish_abort(run)
                return
            for wave in range(max(1, run.current_wave), count + 1):
                run.current_wave = wave
                self._wave_record(run, wave, state="running", started=time.time())
                pending = [t for t in self.registry.deployment_targets(deployment.id, state="pending")
                           if t.wave <= wave]
                online = self.hub.online_ids()
                await self._send_many(run, [t for t in pending if t.device_id in online])
                last = wave == count
                offline = await self._wave_finished(run, wave, last)
                done, failed = self._wave_counts(run, wave)
                share = round(failed / (done + failed), 4) if done + failed else None
                over = not last and exceeds(failed, done + failed, run.policy.threshold)
                self._wave_record(run, wave, state="aborted" if over else "done", finished=time.time(),
                                  offline=offline, failed_share=share)
                if over:
                    await self._abort(run, wave, failed, done + failed)
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

    async def _wave_finished(self, run: _Run, wave: int, last: bool) -> list[str]:
        """Wait until every device of the wave has finished or, but for the last wave, is offline and
        the timeout has come; devices still busy then are given up on. The ids still offline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + run.policy.timeout_s
        while True:
            run.changed.clear()
            states = self.registry.wave_counts(run.deployment.id).get(wave, {})   # counted, not listed
            busy = sum(states.get(s, 0) for s in IN_FLIGHT)
            if not busy and (last or not states.get("pending")) or deadline - loop.time() <= 0:
                targets = [t for t in self.registry.deployment_targets(run.deployment.id) if t.wave == wave]
                for edge in [t.device_id for t in targets if t.state in IN_FLIGHT]:
                    self._give_up(run, edge)   # the timeout came first
                return [t.device_id for t in targets if t.state == "pending"]
            left = deadline - loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(run.changed.wait(), left)
            # one recount for the acks that arrive together, not one per ack: a wave of 10,000
            # devices recounted after each answer costs the loop the square of the fleet
            await asyncio.sleep(min(WAVE_RECOUNT_S, max(0.0, deadline - loop.time())))

    def _wave_counts(self, run: _Run, wave: int) -> tuple[int, int]:
        states = self.registry.wave_counts(run.deployment.id).get(wave, {})
        return states.get("done", 0), states.get("failed", 0)

    def _wave_record(self, run: _Run, wave: int | None = None, **fields: Any) -> None:
        """Update what progress shows of the waves (and of an abort), and save it."""
        if wave is not None:
            run.waves["current"] = max(run.waves.get("current", 0) or 0, wave)
            for entry in run.waves.get("list") or ():
                if entry["wave"] == wave:
                    entry.update(fields)
        self.registry.update_deployment(run.deployment.id, waves=run.waves)

    def _maybe_finish(self, run: _Run) -> None:
        if run.waves.get("abort"):   # the abort finishes it, once its rollback has every answer
            return
        if self.registry.targets_open(run.deployment.id):   # stops at the first open one: no count per answer
            return
        counts = self.registry.target_counts(run.deployment.id)
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        self._finish_with(run.deployment.id, "failed" if failed and not done else "done", None)

    def _finish_with(self, deployment_id: int, state: str, reason: str | None) -> None:
        if reason is not None:
            self.registry.move_targets(deployment_id, ("pending", *IN_FLIGHT), "failed", reason)
        self.registry.update_deployment(deployment_id, state=state)
        run = self._runs.pop(deployment_id, None)
        if run is not None:
            run.close()
            run.poke()
        self.registry.release_deployment(deployment_id)

    def _set(self, deployment_id: int, edge: str, state: str, reason: str | None) -> None:
        self.registry.update_targets(deployment_id, [(edge, state, reason)])

    # --- one device (sending it: federation/deploy_sending.py) -----------------------------------
    def _give_up(self, run: _Run, edge: str) -> None:
        """Time is up for a device: unanswered, or not (yet) healthy — unless it looked healthy."""
        watch = run.watching.get(edge)
        if watch is not None:
            looked_healthy = watch["settle"] is not None
            why = None if looked_healthy else f"not healthy within {run.policy.timeout_s:g} s: {watch['why']}"
            self._verdict(run, edge, "done" if looked_healthy else "failed", why)
            return
        run.stop_watching(edge)
        if edge in run.sending:
            run.settle(edge)
            wait = min(self.ack_timeout, run.policy.timeout_s)
            if self.registry.move_targets(run.deployment.id, ("sending",), "failed", f"no answer within {wait:g} s",
                                          device_id=edge):
                run.poke()
                if run.rolled_out:
                    self._maybe_finish(run)

    def _verdict(self, run: _Run, edge: str, state: str, reason: str | None) -> None:
        """The end of watching an installed device: done (healthy) or failed."""
        run.stop_watching(edge)
        if self.registry.move_targets(run.deployment.id, ("installed",), state, reason, device_id=edge):
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
