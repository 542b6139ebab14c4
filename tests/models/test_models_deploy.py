"""Deployability: reasons, version constraints, variant choice, whole-bundle fit."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streamql.models import bundle_fit, choose_variant, deployable, load_tflite, requirements_from_info
from streamql.models.deploy import version_satisfies
from streamql.testing import tflite as T

DEVICE = {"ram_kb": 512, "flash_kb": 4096, "cpu": "cortex-a53", "signals": ["vibration", "temperature"],
          "runtimes": {"tflite": "2.3.0", "numpy": "2.1"}}


def test_fits():
    verdict = deployable({"ram_kb": 256, "flash_kb": 1024, "signals": ["vibration"],
                          "runtimes": {"tflite": ">=2.3"}, "cpu": ["cortex-a53", "cortex-a72"]}, DEVICE)
    assert verdict.ok and verdict.reason is None and bool(verdict)


@pytest.mark.parametrize("requirements, reason", [
    ({"ram_kb": 600}, "needs 600 KB of RAM but the device has 512 KB"),
    ({"flash_kb": 5000.5}, "needs 5000.5 KB of flash but the device has 4096 KB"),
    ({"signals": ["vibration", "pressure"]}, "needs signal 'pressure', which the device does not have"),
    ({"signals": ["a", "b"]}, "needs signals 'a', 'b', which the device does not have"),
    ({"runtimes": {"onnx": None}}, "needs the onnx runtime, which the device does not have"),
    ({"runtimes": {"tflite": ">=2.14"}}, "needs tflite >=2.14 but the device has tflite 2.3.0"),
    ({"cpu": "cortex-m4"}, "needs a cortex-m4 CPU but the device has cortex-a53"),
])
def test_reasons(requirements, reason):
    verdict = deployable(requirements, DEVICE)
    assert not verdict.ok and verdict.reason == reason


def test_unsupported_op_and_several_reasons_at_once():
    device = dict(DEVICE, ops=["FULLY_CONNECTED", "RELU"])
    verdict = deployable({"ops": ["FULLY_CONNECTED", "CONV_2D"], "ram_kb": 1024}, device)
    assert verdict.reasons == ("needs 1024 KB of RAM but the device has 512 KB",
                               "uses operator CONV_2D, which the device does not support")
    assert verdict.reason == "; ".join(verdict.reasons)
    # a device that does not list its operators is not checked for them
    assert deployable({"ops": ["CONV_2D"]}, DEVICE).ok


def test_unannounced_capabilities_are_not_checked():
    assert deployable({"ram_kb": 10**6, "signals": ["x"], "runtimes": {"tflite": None}}, {}).ok
    assert not deployable({"signals": ["x"]}, {"signals": []}).ok


@pytest.mark.parametrize("version, constraint, ok", [
    ("2.3.0", None, True), ("2.3.0", "2.3", True), ("2.2.9", "2.3", False), ("2.3.0", "==2.3", True),
    ("2.3.1", "==2.3", False), ("2.10", ">2.9", True), ("3.0", ">=2.3, <3", False), ("2.4", "~=2.3", True),
    ("3.0", "~=2.3", False), ("1.2.0rc1", ">=1.2", True), ("2.1", "!=2.1", False),
])
def test_version_constraints(version, constraint, ok):
    assert version_satisfies(version, constraint) is ok


def test_default_requirements_come_from_model_info():
    data = T.fully_connected(np.ones((64, 1024)), np.zeros(64))
    info = load_tflite(data).info()
    req = requirements_from_info(info, "tflite")
    assert req["flash_kb"] == math.ceil(len(data) / 1024)
    assert req["ram_kb"] == math.ceil((len(data) + info["arena_bytes"]) / 1024)
    assert req["ops"] == ["FULLY_CONNECTED"] and req["runtimes"] == {"tflite": None}


def model_spec():
    big = T.fully_connected(np.ones((64, 1024)), np.zeros(64))     # ~256 KB float
    q = T.int8_fully_connected(np.ones((64, 1024)) * 0.01, np.zeros(64)).data  # ~64 KB int8
    artifacts = {"big.tflite": big, "small.tflite": q}
    spec = {"name": "vib", "variants": [
        {"id": "int8", "artifact": "small.tflite", "kind": "tflite", "accuracy": 0.91},
        {"id": "float", "artifact": "big.tflite", "kind": "tflite", "accuracy": 0.95},
        {"id": "native", "kind": "native", "accuracy": 0.80,
         "spec": {"type": "kmeans", "centroids": [[0.0] * 1024, [1.0] * 1024]}},
    ]}
    return spec, artifacts


def test_choose_the_most_accurate_variant_that_fits():
    spec, artifacts = model_spec()
    assert choose_variant(spec, DEVICE, artifacts).variant["id"] == "float"
    small = dict(DEVICE, ram_kb=128)
    choice = choose_variant(spec, small, artifacts)
    assert choice.variant["id"] == "int8"
    assert "needs" in choice.reasons["float"] and "RAM" in choice.reasons["float"]
    no_tflite = dict(DEVICE, runtimes={"numpy": "2.1"})
    assert choose_variant(spec, no_tflite, artifacts).variant["id"] == "native"


def test_no_variant_fits_says_why_for_each():
    spec, artifacts = model_spec()
    choice = choose_variant(spec, {"ram_kb": 8, "runtimes": {"numpy": "2.1"}}, artifacts)
    assert not choice and choice.variant is None
    assert set(choice.reasons) == {"int8", "float", "native"}
    assert choice.reasons["int8"].endswith("; needs the tflite runtime, which the device does not have")
    assert "KB of RAM" in choice.reasons["native"]
    assert choice.reason.startswith("no variant of model 'vib' fits the device (")


def test_stated_requirements_override_the_defaults():
    spec, artifacts = model_spec()
    spec["variants"][1]["requirements"] = {"ram_kb": 100}
    assert choose_variant(spec, dict(DEVICE, ram_kb=128), artifacts).variant["id"] == "float"


def test_missing_artifact_is_a_reason():
    spec, artifacts = model_spec()
    del artifacts["big.tflite"]
    choice = choose_variant(spec, DEVICE, artifacts)
    assert choice.variant["id"] == "int8"
    assert choice.reasons["float"] == "its artifact 'big.tflite' is missing from the bundle"


def manifest(spec, **requirements):
    return {"format_version": 1, "name": "b", "version": "1", "requirements": requirements, "models": [spec]}


def test_bundle_fit_and_bundle_level_requirements():
    spec, artifacts = model_spec()
    fit = bundle_fit(manifest(spec, signals=["vibration"]), DEVICE, artifacts)
    assert fit.ok and fit.variants() == {"vib": "float"}
    fit = bundle_fit(manifest(spec, signals=["pressure"]), DEVICE, artifacts)
    assert not fit.ok
    assert fit.reason.startswith("the bundle needs signal 'pressure'")


def test_bundle_fit_trades_accuracy_for_room_when_models_do_not_fit_together():
    spec, artifacts = model_spec()
    other = json.loads(json.dumps(spec))
    other["name"] = "vib2"
    m = manifest(spec)
    m["models"].append(other)
    each_float = choose_variant(spec, DEVICE, artifacts).requirements["ram_kb"]
    # room for one float and one int8 model, not two floats
    int8 = choose_variant(spec, dict(DEVICE, ram_kb=each_float - 1), artifacts).requirements["ram_kb"]
    device = dict(DEVICE, ram_kb=each_float + int8)
    fit = bundle_fit(m, device, artifacts)
    assert fit.ok and sorted(fit.variants().values()) == ["float", "int8"]
    assert fit.ram_kb == each_float + int8
    native = choose_variant(spec, dict(DEVICE, runtimes={"numpy": "2"}), artifacts).requirements["ram_kb"]
    assert native < int8
    fit = bundle_fit(m, dict(DEVICE, ram_kb=native + 1), artifacts)  # one native model, not two
    assert not fit.ok
    assert fit.reason == f"the models together need {2 * native} KB of RAM but the device has {native + 1} KB"
