"""Does a model fit a device? Requirements against capabilities, and the best variant that fits.

Requirements (a manifest's, a model's or a variant's) may say:
`ram_kb`, `flash_kb` (numbers), `signals` (names the device must have), `ops` (TFLite operators
it must support), `runtimes` (`{"tflite": ">=2.3", "numpy": null}`: null is any version; a bare
version means at least that one) and `cpu` (one name or a list of accepted names).

Capabilities look like `{"ram_kb": 512, "flash_kb": 4096, "cpu": "cortex-a53",
"signals": ["vibration"], "runtimes": {"tflite": "2.3.0", "numpy": "2.1"}, "ops": [...]}`.
A capability the device does not announce is not checked (an edge that does not list its
operators is assumed to run the builtin set).

>>> deployable({"ram_kb": 600}, {"ram_kb": 512}).reason
'needs 600 KB of RAM but the device has 512 KB'
"""
from __future__ import annotations

import itertools
import math
import platform
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from streamql.errors import ModelError

from . import runtime
from .loader import describe_artifact, variant_kind

__all__ = [
    "FIT_CAPABILITIES", "BundleFit", "Choice", "Verdict", "bundle_fit", "choose_variant", "deployable",
    "local_capabilities", "requirements_from_info", "variant_id",
]

_RUNTIME_OF_KIND = {"tflite": "tflite", "native": "numpy"}
_MAX_COMBINATIONS = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.ok


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _as_list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, (str, bytes)):
        return [v]
    return list(v)


def _version(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", str(text))
    return tuple(int(p) for p in parts[:4]) or (0,)


def version_satisfies(version: str, constraint: str | None) -> bool:
    """'2.3.0' against '>=2.3', '<3, >=2.1', '==2.3.0' or a bare '2.3' (at least); None is any."""
    if constraint is None or str(constraint).strip() in ("", "*", "any"):
        return True
    have = _version(version)
    for clause in str(constraint).split(","):
        clause = clause.strip()
        m = re.match(r"^(>=|<=|==|!=|>|<|~=)?\s*(.+)$", clause)
        if not m:
            return False
        op, want = m.group(1) or ">=", _version(m.group(2))
        width = max(len(have), len(want))
        h = have + (0,) * (width - len(have))
        w = want + (0,) * (width - len(want))
        ok = {">=": h >= w, "<=": h <= w, "==": h == w, "!=": h != w, ">": h > w, "<": h < w,
              "~=": h >= w and h[:len(want) - 1] == w[:len(want) - 1]}[op]
        if not ok:
            return False
    return True


# the capabilities `deployable` (and so `bundle_fit`) reads: devices alike in these fit alike
FIT_CAPABILITIES = ("ram_kb", "flash_kb", "signals", "ops", "runtimes", "cpu")


def deployable(requirements: Mapping | None, capabilities: Mapping | None) -> Verdict:
    """Whether a device with `capabilities` meets `requirements`, and every reason it does not."""
    req = dict(requirements or {})
    cap = dict(capabilities or {})
    reasons: list[str] = []
    for key, label in (("ram_kb", "RAM"), ("flash_kb", "flash")):
        if req.get(key) is not None and cap.get(key) is not None:
            need, have = float(req[key]), float(cap[key])
            if need > have:
                reasons.append(f"needs {_fmt(need)} KB of {label} but the device has {_fmt(have)} KB")
    if "signals" in cap:
        have_signals = set(_as_list(cap["signals"]))
        missing = [s for s in _as_list(req.get("signals")) if s not in have_signals]
        if missing:
            names = ", ".join(f"'{s}'" for s in missing)
            word = "signal" if len(missing) == 1 else "signals"
            reasons.append(f"needs {word} {names}, which the device does not have")
    if cap.get("ops") is not None:
        have_ops = {str(o).upper() for o in _as_list(cap["ops"])}
        missing = [o for o in _as_list(req.get("ops")) if str(o).upper() not in have_ops]
        if missing:
            word = "operator" if len(missing) == 1 else "operators"
            reasons.append(f"uses {word} {', '.join(missing)}, which the device does not support")
    runtimes = req.get("runtimes") or {}
    if isinstance(runtimes, (list, tuple)):
        runtimes = {r: None for r in runtimes}
    if runtimes and "runtimes" in cap:
        have_rt = {str(k).lower(): v for k, v in (cap.get("runtimes") or {}).items()}
        for rt, constraint in runtimes.items():
            key = str(rt).lower()
            if key not in have_rt or have_rt[key] in (None, False):
                reasons.append(f"needs the {rt} runtime, which the device does not have")
            elif have_rt[key] is not True and not version_satisfies(str(have_rt[key]), constraint):
                reasons.append(f"needs {rt} {constraint} but the device has {rt} {have_rt[key]}")
    cpus = _as_list(req.get("cpu"))
    if cpus and cap.get("cpu"):
        if str(cap["cpu"]).lower() not in {str(c).lower() for c in cpus}:
            reasons.append(f"needs a {' or '.join(cpus)} CPU but the device has {cap['cpu']}")
    if reasons:
        return Verdict(False, "; ".join(reasons), tuple(reasons))
    return Verdict(True)


def local_capabilities(signals=None) -> dict:
    """What this machine offers: its runtimes (and signals when given); RAM and flash unchecked."""
    runtimes: dict[str, Any] = {"numpy": np.__version__}
    try:
        runtime.interpreter_class()
        runtimes["tflite"] = runtime.runtime_version() or True
    except ModelError:
        pass
    cap: dict[str, Any] = {"cpu": platform.machine() or None, "runtimes": runtimes}
    if signals is not None:
        cap["signals"] = list(signals)
    return cap


def requirements_from_info(info: Mapping, kind: str | None = None) -> dict:
    """Default requirements of a model: flash = its size, RAM = size + working memory (arena),
    the operators it uses and its runtime."""
    size = int(info.get("size_bytes", 0))
    arena = int(info.get("arena_bytes", 0))
    runtime = _RUNTIME_OF_KIND.get(kind or "", info.get("runtime") or "tflite")
    return {
        "flash_kb": math.ceil(size / 1024),
        "ram_kb": math.ceil((size + arena) / 1024),
        "ops": list(info.get("ops", [])),
        "runtimes": {runtime: None},
    }


def variant_id(variant: Mapping, position: int) -> str:
    if variant.get("id"):
        return str(variant["id"])
    if variant.get("artifact"):
        return str(variant["artifact"])
    return f"variant {position + 1}"


def _variants_of(model_spec: Mapping) -> list[dict]:
    variants = model_spec.get("variants")
    if variants is None:
        return [dict(model_spec)]
    if not isinstance(variants, list) or not variants:
        raise ModelError(f"model '{model_spec.get('name', '?')}' lists no variants")
    return [dict(v) for v in variants]


def _merge(*layers: Mapping | None) -> dict:
    out: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key == "runtimes" and isinstance(value, Mapping):
                out["runtimes"] = {**out.get("runtimes", {}), **value}
            elif key in ("signals", "ops") and key in out:
                out[key] = list(dict.fromkeys([*_as_list(out[key]), *_as_list(value)]))
            else:
                out[key] = value
    return out


@dataclass(frozen=True)
class Choice:
    """The variant chosen for one model (None when none fits) and why each other one failed."""

    model: str
    variant: dict | None
    requirements: dict = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    candidates: tuple = ()  # (variant, requirements) of every variant that fits, best first

    def __bool__(self) -> bool:
        return self.variant is not None

    @property
    def reason(self) -> str | None:
        if self.variant is not None:
            return None
        detail = "; ".join(f"{vid}: {why}" for vid, why in self.reasons.items())
        return f"no variant of model '{self.model}' fits the device ({detail})"


def _accuracy(variant: Mapping) -> float:
    try:
        return float(variant.get("accuracy"))
    except (TypeError, ValueError):
        return float("-inf")


def variant_requirements(variant: Mapping, data: bytes | None, name: str,
                         inherited: Mapping | None = None) -> dict:
    """Requirements of one variant: defaults from its model info, then the inherited ones
    (bundle- and model-level), then what the variant states itself."""
    defaults: dict = {}
    try:
        defaults = requirements_from_info(describe_artifact(dict(variant), data, name), variant_kind(dict(variant)))
    except ModelError:
        if data is not None or variant.get("spec") is not None:
            raise
        defaults = {"runtimes": {_RUNTIME_OF_KIND.get(variant_kind(dict(variant)), "tflite"): None}}
    return _merge(defaults, inherited, variant.get("requirements"))


def choose_variant(model_spec: Mapping, capabilities: Mapping | None,
                   artifacts: Mapping[str, bytes] | None = None,
                   inherited: Mapping | None = None) -> Choice:
    """The highest-accuracy variant of `model_spec` that fits `capabilities`.

    `artifacts` (path → bytes) lets requirements default from each artifact's model info;
    `inherited` are requirements that hold for every variant (bundle- and model-level).
    """
    name = str(model_spec.get("name") or "model")
    inherited = _merge(inherited, model_spec.get("requirements"))
    variants = _variants_of(model_spec)
    ranked = sorted(enumerate(variants), key=lambda iv: -_accuracy(iv[1]))  # stable: ties keep order
    reasons: dict[str, str] = {}
    fitting = []
    for position, variant in ranked:
        data = (artifacts or {}).get(variant.get("artifact")) if variant.get("artifact") else None
        vid = variant_id(variant, position)
        if artifacts is not None and variant.get("artifact") and data is None:
            reasons[vid] = f"its artifact '{variant['artifact']}' is missing from the bundle"
            continue
        try:
            req = variant_requirements(variant, data, name, inherited)
        except ModelError as exc:
            reasons[vid] = exc.message
            continue
        verdict = deployable(req, capabilities)
        if verdict.ok:
            fitting.append((dict(variant, id=vid), req))
        else:
            reasons[vid] = verdict.reason or "does not fit"
    if fitting:
        best, req = fitting[0]
        return Choice(name, best, req, reasons, tuple(fitting))
    return Choice(name, None, {}, reasons, ())


@dataclass(frozen=True)
class BundleFit:
    ok: bool
    choices: dict[str, Choice]
    reason: str | None = None
    ram_kb: float = 0.0
    flash_kb: float = 0.0

    def __bool__(self) -> bool:
        return self.ok

    def variants(self) -> dict[str, str | None]:
        """model name → id of the chosen variant (None when it does not fit)."""
        return {m: (c.variant or {}).get("id") for m, c in self.choices.items()}


def bundle_fit(bundle_or_manifest: Any, capabilities: Mapping | None,
               artifacts: Mapping[str, bytes] | None = None) -> BundleFit:
    """Choose a variant of every model of a bundle for a device, or say why it does not fit.

    Each model gets its best variant that fits on its own; then the chosen variants together must
    fit the device's RAM and flash (plus the bundle's own stated `ram_kb`/`flash_kb`, which are
    extra needs of its scripts). When they do not, the combination with the highest total
    accuracy that fits is taken.
    """
    manifest = getattr(bundle_or_manifest, "manifest", bundle_or_manifest)
    if artifacts is None:
        artifacts = getattr(bundle_or_manifest, "artifacts", None)
    if not isinstance(manifest, Mapping):
        raise ModelError("bundle_fit needs a bundle or its manifest")
    bundle_req = dict(manifest.get("requirements") or {})
    shared = {k: v for k, v in bundle_req.items() if k not in ("ram_kb", "flash_kb")}
    choices: dict[str, Choice] = {}
    failures = []
    top = deployable(shared, capabilities)
    if not top.ok:
        failures.append(f"the bundle {top.reason}")
    for spec in manifest.get("models") or []:
        choice = choose_variant(spec, capabilities, artifacts, shared)
        choices[choice.model] = choice
        if not choice:
            failures.append(choice.reason)
    if failures:
        return BundleFit(False, choices, "; ".join(failures))
    extra_ram = float(bundle_req.get("ram_kb") or 0)
    extra_flash = float(bundle_req.get("flash_kb") or 0)
    cap = dict(capabilities or {})

    def totals(combo) -> tuple[float, float]:
        ram = extra_ram + sum(float(r.get("ram_kb") or 0) for _, r in combo)
        flash = extra_flash + sum(float(r.get("flash_kb") or 0) for _, r in combo)
        return ram, flash

    def fits(ram: float, flash: float) -> bool:
        return (cap.get("ram_kb") is None or ram <= float(cap["ram_kb"])) and \
               (cap.get("flash_kb") is None or flash <= float(cap["flash_kb"]))

    names = list(choices)
    best_combo = tuple(choices[n].candidates[0] for n in names)
    ram, flash = totals(best_combo)
    if not fits(ram, flash):
        pools = [choices[n].candidates for n in names]
        found = None
        if math.prod(len(p) for p in pools) <= _MAX_COMBINATIONS:
            scored = []
            for combo in itertools.product(*pools):
                r, f = totals(combo)
                if fits(r, f):
                    scored.append((-sum(max(_accuracy(v), 0.0) for v, _ in combo), r, f, combo))
            if scored:
                found = min(scored, key=lambda s: s[:3])
        if found is None:
            short = [f"{_fmt(need)} KB of {label} but the device has {_fmt(float(cap[key]))} KB"
                     for key, label, need in (("ram_kb", "RAM", ram), ("flash_kb", "flash", flash))
                     if cap.get(key) is not None and need > float(cap[key])]
            return BundleFit(False, choices, "the models together need " + " and ".join(short), ram, flash)
        _, ram, flash, best_combo = found
        choices = {n: Choice(n, v, r, choices[n].reasons, choices[n].candidates)
                   for n, (v, r) in zip(names, best_combo)}
    return BundleFit(True, choices, None, ram, flash)
