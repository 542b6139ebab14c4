"""Sending a deployment's change to its devices (a mixin of `DeploymentManager`,
federation/deployments.py, whose runs, registry and hub it uses).

A wave marks every device it sends to `sending` in one transaction, then a bounded set of
workers (the manager's `concurrency`, shared by all deployments) sends the frames, each send
waiting for the socket to drain: 10,000 devices are neither 10,000 transactions in one turn of
the event loop nor 10,000 bundles queued in memory at once. The ack timer of a device starts when
its frames have gone out, and at most the manager's `in_flight` devices of a deployment have them
without having answered (on NATS the frame is small and each edge fetches the bundle itself: the
window keeps the fetches in line with the timers).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

from federation.deploy_frames import variant_label
from federation.hub import EdgeOffline
from federation.records import DeploymentTarget
from streamql import wire

if TYPE_CHECKING:
    from federation.deployments import _Run


class DeploymentSending:
    """Needs the manager's `registry`, `hub`, `_runs`, `_send_slots`, `concurrency`, `in_flight`, `ack_timeout`,
    `_set` and `_give_up`."""

    def _mark_sending(self, run: "_Run", targets: list[DeploymentTarget]) -> list[DeploymentTarget]:
        """The targets not already in flight, marked `sending` (one transaction for all)."""
        fresh = [t for t in targets if t.device_id not in run.sending and t.device_id not in run.watching]
        if fresh:
            now = time.monotonic()
            for target in fresh:
                run.sending.add(target.device_id)
                run.sent_at[target.device_id] = now
            self.registry.update_targets(run.deployment.id, [(t.device_id, "sending", None) for t in fresh])
        return fresh

    async def _send_many(self, run: "_Run", targets: list[DeploymentTarget]) -> None:
        """Send to these devices (online now), at most `concurrency` at a time."""
        fresh = self._mark_sending(run, targets)
        if not fresh:
            return
        queue = deque(fresh)

        async def worker() -> None:
            while queue:
                await self._deliver(run, queue.popleft())
                # a send the socket takes at once does not suspend: without this, one worker
                # would send every bundle of the wave in a single turn of the event loop
                await asyncio.sleep(0)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(queue)))))

    async def _send(self, run: "_Run", target: DeploymentTarget) -> None:
        """Send one device its change (a reconnect); its answer comes to edge_replied."""
        if self._mark_sending(run, [target]):
            await self._deliver(run, target)

    async def _deliver(self, run: "_Run", target: DeploymentTarget) -> None:
        edge = target.device_id
        deployment = run.deployment
        if deployment.id not in self._runs or edge not in run.sending:
            return   # finished, or the device dropped meanwhile (pending again: resent when it is back)
        await self._room_in_window(run)
        if deployment.id not in self._runs or edge not in run.sending:
            return
        try:
            async with self._send_slots:
                run.sent_at[edge] = time.monotonic()
                if deployment.action == "deploy":
                    for data in run.bundle.frames(run.did, self._variants_for(run, target)):
                        await self.hub.send(edge, data)
                elif deployment.action == "rollback":
                    fields = {"did": run.did, "model": deployment.bundle}
                    if deployment.version is not None:
                        fields["version"] = deployment.version
                    await self.hub.send(edge, wire.make("rollback", **fields))
                else:
                    await self.hub.send(edge, wire.make("undeploy", did=run.did, model=deployment.bundle))
        except EdgeOffline:
            if edge in run.sending:
                run.settle(edge)
                self._set(deployment.id, edge, "pending", "the device went offline; resent when it is back")
                run.poke()
            return
        if deployment.id not in self._runs or edge not in run.sending:
            return  # finished, or answered already
        run.awaiting[edge] = None
        previous = run.timers.pop(edge, None)
        if previous is not None:
            previous.cancel()
        wait = min(self.ack_timeout, run.policy.timeout_s)
        run.timers[edge] = asyncio.get_running_loop().call_later(wait, self._give_up, run, edge)

    async def _room_in_window(self, run: "_Run") -> None:
        """Wait until fewer than `in_flight` devices of the run have its frames and have not answered."""
        while len(run.awaiting) >= self.in_flight and run.deployment.id in self._runs:
            run.room.clear()
            with contextlib.suppress(asyncio.TimeoutError):   # bounded: a finished run is looked at again
                await asyncio.wait_for(run.room.wait(), 1.0)

    def _variants_for(self, run: "_Run", target: DeploymentTarget) -> tuple[str, ...]:
        announced = self.hub.announced(target.device_id)
        if announced is None:
            device = self.registry.get_device(target.device_id)
            capabilities = device.capabilities if device else {}
        else:
            capabilities = announced["capabilities"]
        fit = run.bundle.fit(capabilities)
        return variant_label(fit)[1] if fit.ok else ()
