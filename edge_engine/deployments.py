"""Deployments on an edge: deploy (chunked), rollback and undeploy of signed bundles.

A deployment is checked completely before anything changes:

    chunks (kept on disk by did) → sha256 of the whole → signature (trusted keys) → name and
    version → requirements against this edge's capabilities (and, with the other active bundles,
    its RAM and flash) → a scratch engine runs the scripts and the bundle's tests → a fresh engine with every
    active bundle installed, its autostart queries compiled → the bundle file written →
    **deployments.json replaced (the one atomic rename that switches versions)** → ack.

Any failure before the rename is a nack with its code (`hash`, `signature`, `validate`,
`requirements`, `script`, `install`, `unknown_model`) and leaves everything as it was. The
engine's store is never patched in place: every change builds a new engine from the bundles
that will be active and swaps it in whole (`Change.engine`), so a bundle's new version never
meets its old version's functions, and after a crash the engine rebuilt from deployments.json
is exactly the one that was running. `restore()` does that at start, verifying every bundle's
hash and signature again.

The methods here block (disk, signatures, model loading, scripts): the daemon calls them from a
worker thread, one at a time.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from streamql.errors import ModelError, QueryError
from streamql.models import bundle_fit, install_bundle, read_bundle, run_bundle_tests

from .autostart import AutostartSpec, autostart_queries
from .store import BundleVersion, DeploymentState, EdgeStore, StoreDamaged

__all__ = ["DeployError", "Change", "Deployments"]

MAX_BUNDLE_BYTES = 256 << 20


class DeployError(Exception):
    """A deployment refused: `code` is the nack code, `reason` says why in plain words."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass
class Change:
    """What a deployment frame led to: the answer, and the engine to swap in (None: unchanged)."""

    frame: str                          # 'ack' | 'nack'
    fields: dict
    engine: Any = None
    autostart: list[AutostartSpec] = field(default_factory=list)


class Deployments:
    """The bundles of one edge (see the module docstring).

    `new_engine()` makes an empty engine with this edge's signals; `capabilities` are what
    deployability is checked against (`ram_kb`, `flash_kb`, `cpu`, `signals` as names, `runtimes`).
    """

    def __init__(self, store: EdgeStore, new_engine: Callable[[], Any], capabilities: dict,
                 trusted_keys: list, *, log: logging.Logger | None = None, run_tests: bool = True):
        self.store = store
        self.new_engine = new_engine
        self.capabilities = dict(capabilities)
        self.trusted_keys = list(trusted_keys)
        self.log = log or logging.getLogger("streamql.edge.deployments")
        self.run_tests = run_tests
        self.state = DeploymentState()
        self.bundles: dict = {}            # name → Bundle, the active ones, in installation order
        self.fits: dict = {}               # name → BundleFit of the active version
        self.restore_errors: list[str] = []
        self.crash_hook: Callable[[str], None] = lambda step: None   # fault injection for tests

    # == what runs ==============================================================================
    def active(self) -> dict[str, str]:
        """bundle name → active version (`hello.models`, `ack.active`)."""
        return {name: bundle.version for name, bundle in self.bundles.items()}

    def autostart(self) -> list[AutostartSpec]:
        return [spec for bundle in self.bundles.values() for spec in autostart_queries(bundle)]

    # == start ==================================================================================
    def restore(self) -> Any:
        """The engine with every bundle deployments.json names, each verified again; bundles that
        no longer verify, fit or install are left out (and reported), never half installed."""
        try:
            self.state = self.store.load_state()
        except StoreDamaged as exc:
            self.restore_errors.append(str(exc))
            self.state = DeploymentState()
        self.store.collect_garbage(self.state)
        self.store.chunks.sweep()
        bundles, fits = {}, {}
        for name, record in self.state.bundles.items():
            try:
                bundle = self._verified(self.store.read_bundle_bytes(record.active.sha256), name,
                                        record.active.version)
                fits[name] = self._fit(bundle, exclude=name, others=fits)
                bundles[name] = bundle
            except (DeployError, StoreDamaged, OSError) as exc:
                self._restore_failed(name, record.active.version, exc)
        while True:
            try:
                engine = self._build(bundles)
                break
            except DeployError as exc:    # _build names the bundle whose scripts failed
                failed = getattr(exc, "bundle", None) or next(reversed(bundles))
                self._restore_failed(failed, bundles[failed].version, exc)
                bundles.pop(failed)
                fits.pop(failed, None)
        self.bundles, self.fits = bundles, fits
        return engine

    def _restore_failed(self, name: str, version: str, exc: Exception) -> None:
        reason = getattr(exc, "reason", None) or str(exc)
        message = f"bundle '{name}' {version} was not restored: {reason}"
        self.restore_errors.append(message)
        self.log.error(message)

    # == frames =================================================================================
    def receive_chunk(self, fields: dict) -> Change | None:
        """Store one deploy chunk; when the bundle is complete, deploy it (else None)."""
        did, model, size, chunks = fields["did"], fields["model"], fields["size"], fields["chunks"]
        if did in self.state.done and self.state.done[did].get("action") == "deploy":
            return self._again(did)
        limit = min(MAX_BUNDLE_BYTES, 1024 * self.capabilities["flash_kb"]) \
            if self.capabilities.get("flash_kb") is not None else MAX_BUNDLE_BYTES
        if size > limit:
            return self._nack(did, model, "requirements",
                              f"the bundle of {size} bytes is larger than this edge can store ({limit} bytes)")
        if chunks > max(1, size):
            return self._nack(did, model, "validate", f"{chunks} chunks cannot make a bundle of {size} bytes")
        meta = {k: fields[k] for k in ("model", "version", "sha256", "size", "chunks")}
        self.store.chunks.put(did, fields["chunk"], fields["data"], meta)
        received = self.store.chunks.received(did)
        total = sum(received.values())
        if total > size:
            self.store.chunks.discard(did)
            return self._nack(did, model, "hash", f"the chunks received hold {total} bytes, more than the "
                                                   f"bundle's {size}")
        if any(i not in received for i in range(chunks)):
            return None
        if total != size:
            self.store.chunks.discard(did)
            return self._nack(did, model, "hash", f"the {chunks} chunks hold {total} bytes, the deployment "
                                                   f"says {size}")
        data = self.store.chunks.join(did, chunks)
        try:
            return self.deploy(did, model, fields["version"], fields["sha256"], data)
        finally:
            self.store.chunks.discard(did)

    def deploy(self, did: str, model: str, version: str, sha256: str, data: bytes) -> Change:
        if did in self.state.done and self.state.done[did].get("action") == "deploy":
            return self._again(did)
        try:
            if hashlib.sha256(data).hexdigest() != sha256:
                raise DeployError("hash", "the bundle's sha256 does not match the deployment's")
            bundle = self._verified(data, model, version)
            current = self.state.bundles.get(model)
            if current is not None and current.active.sha256 == sha256:
                return self._commit(did, "deploy", model, version, self.state, None, "already active")
            fit = self._fit(bundle, exclude=model, others=self.fits)
            bundles = dict(self.bundles)
            bundles[model] = bundle
            if self.run_tests and bundle.test_paths:
                self._test(bundle, bundles)
            self.crash_hook("built-scratch")
            engine = self._build(bundles)
            specs = self._check_autostart(engine, bundles)
            self.store.put_bundle(sha256, data)
            self.crash_hook("bundle-written")
            state = self.state.with_active(model, BundleVersion(version, sha256))
        except DeployError as exc:
            return self._nack(did, model, exc.code, exc.reason)
        return self._commit(did, "deploy", model, version, state, (engine, specs, bundles, {**self.fits, model: fit}))

    def rollback(self, did: str, model: str, version: str | None = None) -> Change:
        if did in self.state.done and self.state.done[did].get("action") == "rollback":
            return self._again(did)
        if model not in self.state.bundles:
            return self._nack(did, model, "unknown_model", f"bundle '{model}' is not deployed here")
        try:
            try:
                state = self.state.rolled_back(model, version)
            except ValueError as exc:
                raise DeployError("install", str(exc)) from None
            target = state.bundles[model].active
            try:
                bundle = self._verified(self.store.read_bundle_bytes(target.sha256), model, target.version)
            except (StoreDamaged, OSError) as exc:
                raise DeployError("install", f"version {target.version} cannot be read back: {exc}") from None
            fit = self._fit(bundle, exclude=model, others=self.fits)
            bundles = dict(self.bundles)
            bundles[model] = bundle
            engine = self._build(bundles)
            specs = self._check_autostart(engine, bundles)
        except DeployError as exc:
            return self._nack(did, model, exc.code, exc.reason)
        return self._commit(did, "rollback", model, target.version, state,
                            (engine, specs, bundles, {**self.fits, model: fit}))

    def undeploy(self, did: str, model: str) -> Change:
        if did in self.state.done and self.state.done[did].get("action") == "undeploy":
            return self._again(did)
        if model not in self.state.bundles:
            return self._commit(did, "undeploy", model, None, self.state, None, "was not deployed")
        bundles = {n: b for n, b in self.bundles.items() if n != model}
        try:
            engine = self._build(bundles)
            specs = self._check_autostart(engine, bundles)
        except DeployError as exc:
            return self._nack(did, model, exc.code, exc.reason)
        fits = {n: f for n, f in self.fits.items() if n != model}
        return self._commit(did, "undeploy", model, None, self.state.without(model), (engine, specs, bundles, fits))

    # == steps ==================================================================================
    def _verified(self, data: bytes, model: str, version: str):
        if not self.trusted_keys:
            raise DeployError("signature", "this edge trusts no signing keys (configure trusted_keys), so it "
                                           "accepts no bundle")
        try:
            bundle = read_bundle(data, self.trusted_keys)
        except ModelError as exc:
            words = exc.message.lower()
            code = "signature" if any(w in words for w in ("sign", "trust", "tamper")) else "install"
            raise DeployError(code, exc.message) from None
        if bundle.name != model:
            raise DeployError("validate", f"the bundle is '{bundle.name}', the deployment names '{model}'")
        if bundle.version != version:
            raise DeployError("validate", f"the bundle is version {bundle.version}, the deployment names {version}")
        return bundle

    def _fit(self, bundle, *, exclude: str, others: dict):
        """The bundle's fit on this device; with the other active bundles it must fit RAM and flash.

        Variants are chosen against the whole device (so the choice never depends on what else is
        deployed, and a restart chooses the same ones); the total must then fit.
        """
        fit = bundle_fit(bundle, self.capabilities)
        if not fit:
            raise DeployError("requirements", fit.reason or "does not fit")
        for key, label in (("ram_kb", "RAM"), ("flash_kb", "flash")):
            have = self.capabilities.get(key)
            if have is None:
                continue
            used = sum(getattr(f, key, 0.0) for n, f in others.items() if n != exclude)
            need = getattr(fit, key, 0.0)
            if used + need > have:
                raise DeployError("requirements", f"needs {need:g} KB of {label} but the device has "
                                                  f"{max(0.0, have - used):g} KB left of {have:g} KB after "
                                                  "the other deployed bundles")
        return fit

    def _build(self, bundles: dict):
        """A fresh engine with `bundles` installed in order (autostart queries not started)."""
        engine = self.new_engine()
        for name, bundle in bundles.items():
            try:
                install_bundle(engine, bundle, self.capabilities, trusted_keys=self.trusted_keys, autostart=False)
            except QueryError as exc:
                error = DeployError("script", f"bundle '{name}' {bundle.version} does not install: "
                                              f"{exc.kind}: {exc.message}" + _notes(exc))
                error.bundle = name
                raise error from None
            except Exception as exc:  # noqa: BLE001 - a broken bundle is a nack, never a crash
                error = DeployError("install", f"bundle '{name}' {bundle.version} does not install: "
                                               f"{type(exc).__name__}: {exc}")
                error.bundle = name
                raise error from None
        return engine

    def _test(self, bundle, bundles: dict) -> None:
        scratch = self._build(bundles)
        report = run_bundle_tests(bundle, scratch, trusted_keys=self.trusted_keys)
        if not report.passed:
            failures = "; ".join(f"{f.path}: {f.name}: {f.kind}: {f.message}" for f in report.failures[:5])
            raise DeployError("validate", f"{len(report.failures)} test(s) of bundle '{bundle.name}' "
                                          f"{bundle.version} failed: {failures}")

    def _check_autostart(self, engine, bundles: dict) -> list[AutostartSpec]:
        specs = [spec for bundle in bundles.values() for spec in autostart_queries(bundle)]
        for spec in specs:
            try:
                engine.query(spec.text).close()   # compiles only: a stream does not start until pulled
            except QueryError as exc:
                raise DeployError("script", f"autostart query {spec.path} #{spec.index} of bundle "
                                            f"'{spec.bundle}' does not compile: {exc.kind}: {exc.message}") from None
        return specs

    def _commit(self, did: str, action: str, model: str, version: str | None, state: DeploymentState,
                built: tuple | None, message: str | None = None) -> Change:
        """Write the new state (THE switch) and answer ack; `built` is what to swap in."""
        state = state.remember(did, {"action": action, "model": model, "version": version})
        self.crash_hook("before-switch")
        self.store.save_state(state)
        self.crash_hook("after-switch")
        self.state = state
        engine = specs = None
        if built is not None:
            engine, specs, self.bundles, self.fits = built
        self.store.collect_garbage(state)
        fields = {"did": did, "active": self.active(), "model": model,
                  "version": self.bundles[model].version if model in self.bundles else None}
        if message:
            fields["message"] = message
        return Change("ack", fields, engine, specs or [])

    def _again(self, did: str) -> Change:
        entry = self.state.done[did]
        model = entry.get("model")
        fields = {"did": did, "active": self.active(), "model": model, "message": "already done",
                  "version": self.bundles[model].version if model in self.bundles else None}
        return Change("ack", fields)

    def _nack(self, did: str, model: str, code: str, reason: str) -> Change:
        self.log.warning("deployment %s of '%s' refused (%s): %s", did, model, code, reason)
        return Change("nack", {"did": did, "code": code, "reason": reason[:2000], "active": self.active(),
                               "model": model})


def _notes(exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", None)
    return f" ({'; '.join(notes)})" if notes else ""
