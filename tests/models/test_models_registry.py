"""The versioned registry: install, hot swap under readers, rollback, snapshots."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamql.errors import ModelError
from streamql.models import (ModelEntry, ModelRegistry, kmeans, linear_regression, load_tflite,
                             model_info, zscore_detector)
from streamql.testing import tflite as T


class FakeClock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        self.t += 1.0
        return self.t


def constant(value: float, dims: int = 4):
    """A model whose every output is `value`: the version shows in the result."""
    return linear_regression(np.zeros(dims), float(value))


def test_install_get_and_entry_fields():
    reg = ModelRegistry(clock=FakeClock())
    model = kmeans([[0, 0], [1, 1]])
    entry = reg.install("Centroids", model, version="1.2.0", origin="create model")
    assert isinstance(entry, ModelEntry)
    assert (entry.name, entry.version, entry.origin) == ("Centroids", "1.2.0", "create model")
    assert entry.sha256 == model.sha256 and entry.installed_at == 1_700_000_001.0
    assert reg.get("Centroids") is entry and "Centroids" in reg and len(reg) == 1
    with pytest.raises(AttributeError):
        entry.version = "2"  # frozen


def test_missing_model_is_a_model_error_naming_it():
    reg = ModelRegistry()
    reg.install("Centroids", kmeans([[0.0]]))
    with pytest.raises(ModelError, match="no model named 'nope'"):
        reg.get("nope")
    with pytest.raises(ModelError, match="case-sensitive: did you mean 'Centroids'"):
        reg.get("centroids")
    for op in (reg.rollback, reg.remove, reg.history):
        with pytest.raises(ModelError, match="'ghost'"):
            op("ghost")


def test_versions_history_and_rollback():
    reg = ModelRegistry(keep=2, clock=FakeClock())
    e1 = reg.install("m", constant(1))
    e2 = reg.install("m", constant(2))
    assert (e1.version, e2.version) == ("1", "2")
    e3 = reg.install("m", constant(3), version="3.0")
    assert reg.history("m") == [e1, e2, e3]
    e4 = reg.install("m", constant(4))
    assert e4.version == "4"
    assert reg.history("m") == [e2, e3, e4]  # keeps two previous versions
    assert reg.rollback("m") is e3
    assert reg.get("m").model.predict(np.zeros(4)) == 3.0
    assert reg.rollback("m") is e2
    with pytest.raises(ModelError, match="no previous version"):
        reg.rollback("m")
    assert reg.get("m") is e2


def test_reinstalling_the_same_version_and_bytes_changes_nothing():
    reg = ModelRegistry()
    data = T.fully_connected([[1.0, 2.0]], [0.0])
    first = reg.install("fc", load_tflite(data), version="1")
    again = reg.install("fc", load_tflite(data), version="1")
    assert again is first and reg.history("fc") == [first]
    revision = reg.revision
    reg.install("fc", load_tflite(data), version="2")
    assert reg.revision == revision + 1


def test_remove_names_entries():
    reg = ModelRegistry()
    reg.install("b", constant(1))
    reg.install("a", constant(2))
    assert reg.names() == ["a", "b"]
    assert [e.name for e in reg.entries()] == ["a", "b"]
    reg.remove("a")
    assert reg.names() == ["b"]
    assert reg.install("a", constant(5)).version == "1"


def test_failed_load_leaves_the_previous_model_serving():
    reg = ModelRegistry()
    good = reg.install("fc", load_tflite(T.fully_connected([[1.0]], [1.0])), version="1")
    broken = T.fully_connected([[1.0]], [2.0])[:40]
    with pytest.raises(ModelError):
        reg.install("fc", load_tflite(broken), version="2")
    assert reg.get("fc") is good
    assert reg.get("fc").model.predict([1.0]).tolist() == [2.0]


def test_hot_swap_never_mixes_versions_within_a_batch():
    """Readers fetch the entry once per batch, as queries do; a writer swaps versions meanwhile."""
    reg = ModelRegistry()
    reg.install("m", constant(0), version="0")
    stop = threading.Event()
    problems = []
    seen_versions = set()
    batches = [0]
    batch = np.random.default_rng(0).normal(size=(256, 4))

    def reader():
        while not stop.is_set():
            entry = reg.get("m")
            out = entry.model.predict(batch)
            values = set(np.unique(out).tolist())
            if values != {float(entry.version)}:
                problems.append((entry.version, values))
            seen_versions.add(entry.version)
            batches[0] += 1

    def writer():
        for v in range(1, 60):
            entry = reg.install("m", constant(v), version=str(v))
            if reg.get("m") is not entry:  # the next batch must use the new version
                problems.append(("not current", v))
            if v % 10 == 0:
                reg.rollback("m")
                reg.install("m", constant(v), version=f"{v}")
            time.sleep(0.001)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    w = threading.Thread(target=writer)
    w.start()
    w.join()
    stop.set()
    for t in readers:
        t.join()
    assert problems == []
    assert reg.get("m").version == "59"
    assert batches[0] > 0 and len(seen_versions) > 1


def test_model_info_record():
    reg = ModelRegistry(clock=lambda: 0.0)
    entry = reg.install("vib", load_tflite(T.fully_connected(np.ones((8, 256)), np.zeros(8))),
                        version="1.2.0", origin="file vib.tflite")
    info = model_info(entry)
    assert info["name"] == "vib" and info["version"] == "1.2.0"
    assert info["installed_at"] == "1970-01-01T00:00:00.000Z"
    assert info["origin"] == "file vib.tflite"
    assert info["sha256"] == entry.sha256 and info["macs"] == 2048
    for key in ("size_bytes", "arena_bytes", "inputs", "outputs", "quantization", "ops", "kind"):
        assert key in info


def test_dump_and_restore_keep_current_and_previous_versions(rng):
    clock = FakeClock()
    reg = ModelRegistry(keep=3, clock=clock)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    reg.install("fc", load_tflite(T.fully_connected(w, [0, 0, 0])), version="1.0")
    reg.install("fc", load_tflite(T.fully_connected(w * 2, [0, 0, 0])), version="2.0", origin="bundle x")
    reg.install("km", kmeans([[0, 0], [5, 5]]))
    z = zscore_detector(warmup=2)
    z.predict(np.arange(10.0))
    reg.install("z", z)
    meta, payloads = reg.dump()
    assert all(isinstance(v, bytes) for v in payloads.values())
    again = ModelRegistry.restore(meta, payloads)
    assert again.names() == ["fc", "km", "z"]
    assert [e.version for e in again.history("fc")] == ["1.0", "2.0"]
    assert again.get("fc").origin == "bundle x"
    assert again.get("fc").installed_at == reg.get("fc").installed_at
    x = rng.normal(size=(4, 5))
    np.testing.assert_array_equal(again.get("fc").model.predict(x), reg.get("fc").model.predict(x))
    assert again.get("z").model.predict(20.0)["z"] == reg.get("z").model.predict(20.0)["z"]
    assert again.rollback("fc").version == "1.0"
    assert again.install("km", kmeans([[1.0, 1.0]])).version == "2"  # numbering continues


def test_loading_a_damaged_snapshot_changes_nothing():
    reg = ModelRegistry()
    reg.install("a", constant(1))
    meta, payloads = reg.dump()
    target = ModelRegistry()
    target.install("keep", constant(7))
    with pytest.raises(ModelError, match="lacks the data"):
        target.load(meta, {})
    with pytest.raises(ModelError, match="unknown format"):
        target.load({"format": 99}, payloads)
    assert target.names() == ["keep"]


def test_install_rejects_non_models():
    reg = ModelRegistry()
    with pytest.raises(ModelError, match="cannot install"):
        reg.install("x", object())  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="non-empty name"):
        reg.install("", constant(1))
