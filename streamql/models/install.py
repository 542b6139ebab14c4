"""Installing a bundle into an engine and running its tests.

The engine is anything with `.models` (a ModelRegistry), `.execute(text)` (runs a script
eagerly; a failed `validate` raises QueryValidationError) and `.start(text)` (starts a
background query and returns its handle).
"""
from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from typing import Any

from streamql.errors import ModelError, QueryError, QueryValidationError

from .bundle import Bundle, read_bundle, split_statements
from .deploy import bundle_fit, local_capabilities
from .registry import ModelEntry

__all__ = ["InstallReport", "TestReport", "TestResult", "install_bundle", "run_bundle_tests"]


@dataclass(frozen=True)
class InstallReport:
    bundle: str
    version: str
    variants: dict[str, str]          # model name → chosen variant id
    entries: dict[str, ModelEntry]    # model name → the installed entry
    scripts: tuple[str, ...]          # script paths run, in order
    started: tuple[Any, ...] = ()     # handles of the autostart queries


def _drain(result: Any) -> None:
    # a script's results may come back lazily; run them so every statement (and validate) executes
    if isinstance(result, types.GeneratorType):
        for item in result:
            _drain(item)


def install_bundle(engine: Any, bundle: Bundle | Any, capabilities: dict | None = None, *,
                   trusted_keys: Any = None, autostart: bool = True) -> InstallReport:
    """Install the best-fitting variant of every model, run the scripts, start the autostart queries.

    `capabilities` default to this machine's (its runtimes; RAM, flash and signals unchecked).
    `trusted_keys` default to the engine's `trusted_keys` attribute, when it has one: then only
    bundles signed by one of those keys are installed.
    Models are loaded before anything changes; when a model install or a script fails, the models
    installed so far are rolled back and the error is raised. A failing autostart query cancels
    the ones already started and raises, leaving models and script effects in place.
    """
    trusted = trusted_keys if trusted_keys is not None else getattr(engine, "trusted_keys", None)
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, trusted)
    elif trusted is not None:
        bundle = read_bundle(bundle.to_bytes(), trusted)  # read earlier, perhaps without the keys
    caps = local_capabilities() if capabilities is None else capabilities
    fit = bundle_fit(bundle, caps)
    if not fit:
        raise ModelError(f"bundle '{bundle.name}' {bundle.version} does not fit this device: {fit.reason}")
    loaded = {}
    for model_name, choice in fit.choices.items():
        loaded[model_name] = (choice.variant["id"], bundle.load_model(model_name, choice.variant))
    registry = engine.models
    done: list[tuple[str, ModelEntry | None, ModelEntry]] = []
    paths = bundle.script_paths
    try:
        for model_name, (vid, model) in loaded.items():
            before = registry.find(model_name)
            origin = f"bundle {bundle.name} {bundle.version} variant {vid}"
            entry = registry.install(model_name, model, version=bundle.version, origin=origin)
            done.append((model_name, before, entry))
        for path, text in zip(paths, bundle.scripts):
            try:
                _drain(engine.execute(text))
            except Exception as exc:
                exc.add_note(f"while running {path} of bundle '{bundle.name}' {bundle.version}")
                raise
    except Exception:
        for model_name, before, entry in reversed(done):
            if entry is before:
                continue
            if before is None:
                registry.remove(model_name)
            else:
                registry.rollback(model_name)
        raise
    started = []
    if autostart:
        for query in bundle.autostart:
            try:
                started.append(engine.start(query))
            except Exception as exc:
                for handle in started:
                    cancel = getattr(handle, "cancel", None)
                    if callable(cancel):
                        cancel()
                exc.add_note(f"while starting an autostart query of bundle '{bundle.name}': {query[:80]}")
                raise
    return InstallReport(bundle.name, bundle.version, {m: v for m, (v, _) in loaded.items()},
                         {m: e for m, _, e in done}, tuple(paths), tuple(started))


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class

    path: str
    name: str          # the validate statement's name, or the start of the statement
    passed: bool
    kind: str | None = None     # 'ValidationError' for a failed check, another kind for an error
    message: str | None = None


@dataclass(frozen=True)
class TestReport:
    __test__ = False

    bundle: str
    version: str
    results: tuple[TestResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[TestResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        lines = []
        for r in self.results:
            mark = "ok  " if r.passed else "FAIL"
            line = f"{mark} {r.path}: {r.name}"
            if not r.passed:
                line += f"\n     {r.kind}: {r.message}"
            lines.append(line)
        n_fail = len(self.failures)
        lines.append(f"{len(self.results) - n_fail} passed, {n_fail} failed"
                     f" ({self.bundle} {self.version})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "version": self.version, "passed": self.passed,
                "results": [r.__dict__.copy() for r in self.results]}


_VALIDATE = re.compile(r"^\s*validate\s+(['\"])(.*?)\1", re.I | re.S)


def _label(statement: str) -> str:
    body = re.sub(r"(?m)^\s*(//|--).*$", "", statement).strip()
    m = _VALIDATE.match(body)
    if m:
        return m.group(2)
    first = " ".join(body.split())
    return first[:60] + ("…" if len(first) > 60 else "")


def run_bundle_tests(bundle: Bundle | Any, engine: Any, trusted_keys: Any = None) -> TestReport:
    """Run every statement of the bundle's tests with `engine.execute`; one result per statement.

    A statement passes when it runs; a `validate` that does not hold (QueryValidationError) or any
    other error fails it, and the next statement still runs.
    """
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, trusted_keys)
    results = []
    for path, text in zip(bundle.test_paths, bundle.tests):
        statements = split_statements(text)
        if not statements:
            results.append(TestResult(path, "(no statements)", False, "TestError", "the test file is empty"))
        for statement in statements:
            label = _label(statement)
            try:
                _drain(engine.execute(statement))
            except QueryValidationError as exc:
                results.append(TestResult(path, label, False, exc.kind, exc.message))
            except QueryError as exc:
                results.append(TestResult(path, label, False, exc.kind, exc.message))
            except Exception as exc:  # noqa: BLE001 - an engine bug must not end the test run
                results.append(TestResult(path, label, False, type(exc).__name__, str(exc)))
            else:
                results.append(TestResult(path, label, True))
    return TestReport(bundle.name, bundle.version, tuple(results))
