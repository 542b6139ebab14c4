"""Installing bundles into an engine (a fake with the real one's narrow interface) and testing them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from streamql.errors import ModelError, QueryError
from streamql.models import (init_bundle, install_bundle, keygen, kmeans, pack, read_bundle,
                             run_bundle_tests, sign)

from model_fakes import FakeEngine


@pytest.fixture
def bundle(tmp_path):
    d = tmp_path / "vib"
    init_bundle(d)
    return read_bundle(d)


def test_install_runs_scripts_and_starts_autostart(bundle, fake_engine):
    report = install_bundle(fake_engine, bundle)
    assert report.variants == {"vib": "float32"}  # the most accurate variant that fits here
    entry = fake_engine.models.get("vib")
    assert entry.version == "0.1.0" and entry.origin == "bundle vib 0.1.0 variant float32"
    assert report.entries["vib"] is entry
    assert fake_engine.executed == bundle.scripts
    assert fake_engine.started == bundle.autostart and len(report.started) == 1
    assert entry.model.predict([1, 2, 3, 4]).tolist() == [10.0, -0.5]


def test_capabilities_choose_the_variant(bundle, fake_engine):
    report = install_bundle(fake_engine, bundle, {"runtimes": {"numpy": "2.0"}, "signals": ["sensor"]})
    assert report.variants == {"vib": "numpy"}
    assert fake_engine.models.get("vib").model.kind == "dense"


def test_a_bundle_that_does_not_fit_changes_nothing(bundle, fake_engine):
    with pytest.raises(ModelError, match="does not fit this device: the bundle needs signal 'sensor'"):
        install_bundle(fake_engine, bundle, {"signals": ["other"]})
    assert len(fake_engine.models) == 0 and fake_engine.executed == []


def test_a_failing_script_rolls_the_models_back(bundle):
    engine = FakeEngine(fail_on="create function")
    engine.models.install("vib", kmeans([[0, 0, 0, 0]]), version="0.0.9")
    with pytest.raises(QueryError) as err:
        install_bundle(engine, bundle)
    assert any("functions.sql" in note for note in err.value.__notes__)
    assert engine.models.get("vib").version == "0.0.9"  # the previous model still serves
    fresh = FakeEngine(fail_on="create function")
    with pytest.raises(QueryError):
        install_bundle(fresh, bundle)
    assert fresh.models.names() == []


def test_a_failing_autostart_query_cancels_those_started(tmp_path, fake_engine):
    d = tmp_path / "two"
    init_bundle(d)
    (d / "autostart" / "two_scores.sql").write_text("select stream of 1;\nselect stream of 2;\n")
    handles = []
    real_start = fake_engine.start

    def start(text):
        if "2" in text:
            raise QueryError("no such signal")
        handle = real_start(text)
        handles.append(handle)
        return handle

    fake_engine.start = start
    with pytest.raises(QueryError, match="no such signal"):
        install_bundle(fake_engine, read_bundle(d))
    assert [h.cancelled for h in handles] == [True]


def test_signed_bundles_only(tmp_path, bundle, fake_engine):
    private, public = keygen(tmp_path / "k")
    path = pack(tmp_path / "vib", tmp_path / "vib.sqlbundle")
    with pytest.raises(ModelError, match="not signed"):
        install_bundle(fake_engine, path, trusted_keys=[public])
    sign(path, private)
    assert install_bundle(fake_engine, path, trusted_keys=[public]).version == "0.1.0"


def test_run_bundle_tests_pass(bundle, fake_engine):
    install_bundle(fake_engine, bundle)
    report = run_bundle_tests(bundle, fake_engine)
    assert report.passed and len(report.results) == 1
    assert report.results[0].name == "vib predicts"
    assert "1 passed, 0 failed" in report.summary()
    json.dumps(report.to_dict())


def test_run_bundle_tests_report_failures_and_go_on(tmp_path, fake_engine):
    d = tmp_path / "vib"
    init_bundle(d)
    (d / "tests" / "smoke.sql").write_text(
        "validate 'wrong' check predict('vib', [1, 2, 3, 4]) => [10.0, 0.5];\n"
        "validate 'right' check predict('vib', [1, 2, 3, 4]) => [10.0, -0.5];\n"
        "validate 'unknown' check nothing([1]) => [1];\n")
    bundle = read_bundle(d)
    install_bundle(fake_engine, bundle)
    report = run_bundle_tests(bundle, fake_engine)
    assert not report.passed
    assert [(r.name, r.passed, r.kind) for r in report.results] == [
        ("wrong", False, "ValidationError"), ("right", True, None), ("unknown", False, "QueryError")]
    assert "expected [10.0, 0.5]" in report.failures[0].message
    assert "FAIL tests/smoke.sql: wrong" in report.summary()
    assert "1 passed, 2 failed" in report.summary()


def test_models_keep_serving_batches_through_an_upgrade(tmp_path, fake_engine):
    d = tmp_path / "vib"
    init_bundle(d)
    install_bundle(fake_engine, read_bundle(d))
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["version"] = "0.2.0"
    (d / "manifest.json").write_text(json.dumps(manifest))
    install_bundle(fake_engine, read_bundle(d))
    assert [e.version for e in fake_engine.models.history("vib")] == ["0.1.0", "0.2.0"]
    assert fake_engine.models.rollback("vib").version == "0.1.0"
    np.testing.assert_array_equal(fake_engine.models.get("vib").model.predict(np.zeros((3, 4))),
                                  [[0.0, 0.5]] * 3)


def test_an_engine_with_trusted_keys_refuses_unsigned_bundles(tmp_path, bundle, fake_engine):
    private, public = keygen(tmp_path / "k")
    fake_engine.trusted_keys = [public]
    with pytest.raises(ModelError, match="not signed"):
        install_bundle(fake_engine, bundle)  # a Bundle read earlier without keys
    assert len(fake_engine.models) == 0
    signed = read_bundle(sign(pack(tmp_path / "vib", tmp_path / "vib.sqlbundle"), private))
    assert install_bundle(fake_engine, signed).variants == {"vib": "float32"}
