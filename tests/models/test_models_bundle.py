"""Bundles: template, deterministic packing, hashes, signatures, tampering."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import zipfile

import pytest

from streamql.errors import ModelError
from streamql.models import (Bundle, init_bundle, inspect, keygen, pack, pack_bytes, read_bundle,
                             sign, split_statements, verify)
from streamql.models.bundle import INDEX_NAME, SIGNATURE_NAME

from model_fakes import rewrite_zip


@pytest.fixture
def bundle_dir(tmp_path):
    d = tmp_path / "vib-anomaly"
    init_bundle(d)
    return d


@pytest.fixture
def keys(tmp_path):
    return keygen(tmp_path / "keys" / "release")


@pytest.fixture
def other_keys(tmp_path):
    return keygen(tmp_path / "keys" / "mallory")


def test_template_reads_as_a_bundle(bundle_dir):
    bundle = read_bundle(bundle_dir)
    assert isinstance(bundle, Bundle)
    assert (bundle.name, bundle.version) == ("vib-anomaly", "0.1.0")
    assert bundle.script_paths == ["functions.sql"]
    assert "create function vib_anomaly_score" in bundle.scripts[0]
    [query] = bundle.autostart  # one statement, with the comment lines before it
    assert query.startswith("// Autostart queries")
    assert query.endswith("select stream of predict('vib_anomaly', w) from Vector of Real w\n"
                          "  where w in winagg(signal_stream('sensor'), 4, 4);")
    assert bundle.test_paths == ["tests/smoke.sql"] and "validate" in bundle.tests[0]
    assert set(bundle.artifacts) == {"models/vib_anomaly.tflite", "models/vib_anomaly.json"}
    assert [v["id"] for v in bundle.variants("vib_anomaly")] == ["float32", "numpy"]
    tfl = bundle.load_model("vib_anomaly", "float32")
    native = bundle.load_model("vib_anomaly", "numpy")
    assert tfl.predict([1, 2, 3, 4]).tolist() == [10.0, -0.5]
    assert native.predict([1, 2, 3, 4]).tolist() == [10.0, -0.5]
    assert bundle.provenance["converter"]
    with pytest.raises(ModelError, match="no model 'x'"):
        bundle.variants("x")


def test_init_refuses_a_non_empty_directory(bundle_dir):
    with pytest.raises(ModelError, match="not an empty directory"):
        init_bundle(bundle_dir)


def test_pack_is_deterministic(bundle_dir, tmp_path):
    first = pack_bytes(bundle_dir)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(bundle_dir, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1, 1))  # other timestamps
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("ignored")
    (copy / "release.key").write_text("never packed")
    assert pack_bytes(copy) == first
    out = pack(bundle_dir, tmp_path / "a.sqlbundle")
    assert open(out, "rb").read() == first
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert names[0] == INDEX_NAME and names[1] == "manifest.json"
        index = json.loads(zf.read(INDEX_NAME))
    assert set(index["files"]) == set(names[1:])
    assert all(len(e["sha256"]) == 64 for e in index["files"].values())


def test_pack_default_name(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pack(bundle_dir) == "vib-anomaly-0.1.0.sqlbundle"
    assert read_bundle("vib-anomaly-0.1.0.sqlbundle").name == "vib-anomaly"


def test_pack_changes_with_content(bundle_dir):
    before = pack_bytes(bundle_dir)
    (bundle_dir / "functions.sql").write_text("create function f() -> Integer as 1;\n")
    assert pack_bytes(bundle_dir) != before


def test_keygen_files(keys):
    private, public = keys
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert open(private).read().startswith("-----BEGIN PRIVATE KEY-----")
    assert open(public).read().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ModelError, match="already exists"):
        keygen(private[:-4])


def test_sign_and_verify(bundle_dir, tmp_path, keys):
    private, public = keys
    path = pack(bundle_dir, tmp_path / "b.sqlbundle")
    unsigned = open(path, "rb").read()
    sign(path, private)
    bundle = verify(path, public)
    assert bundle.verified_by and bundle.signed_by == [bundle.verified_by]
    assert read_bundle(path, trusted_keys=[public]).verified_by == bundle.verified_by
    # signing is deterministic and again with the same key replaces its signature
    signed = open(path, "rb").read()
    sign(path, private)
    assert open(path, "rb").read() == signed
    assert signed != unsigned
    assert read_bundle(signed).files == read_bundle(unsigned).files


def test_unsigned_bundle_refused_when_keys_are_trusted(bundle_dir, tmp_path, keys):
    path = pack(bundle_dir, tmp_path / "b.sqlbundle")
    with pytest.raises(ModelError, match="not signed"):
        read_bundle(path, trusted_keys=[keys[1]])
    with pytest.raises(ModelError, match="unpacked bundle directory"):
        read_bundle(bundle_dir, trusted_keys=[keys[1]])
    assert read_bundle(path).name == "vib-anomaly"  # without keys, hashes are still checked


def test_wrong_key_refused(bundle_dir, tmp_path, keys, other_keys):
    path = pack(bundle_dir, tmp_path / "b.sqlbundle")
    sign(path, other_keys[0])
    with pytest.raises(ModelError, match="signed by key [0-9a-f]{16}, which is not trusted"):
        verify(path, keys[1])
    with pytest.raises(ModelError, match="private key"):
        verify(path, keys[0])  # the private key file by mistake


def test_tampered_file_refused(bundle_dir, tmp_path, keys):
    path = pack(bundle_dir, tmp_path / "b.sqlbundle")
    sign(path, keys[0])
    data = open(path, "rb").read()

    def evil_script(name, content):
        return b"drop function everything;\n" if name == "functions.sql" else content

    tampered = rewrite_zip(data, evil_script)
    with pytest.raises(ModelError, match="tampered.*'functions.sql'"):
        read_bundle(tampered, trusted_keys=[keys[1]])
    with pytest.raises(ModelError, match="tampered"):
        read_bundle(tampered)  # hashes are checked even without keys


def test_tampered_index_refused(bundle_dir, tmp_path, keys):
    """Changing a file and its hash in the index breaks the signature."""
    import hashlib

    path = pack(bundle_dir, tmp_path / "b.sqlbundle")
    sign(path, keys[0])
    evil = b"select 1;\n"

    def change(name, content):
        if name == "functions.sql":
            return evil
        if name == INDEX_NAME:
            index = json.loads(content)
            index["files"]["functions.sql"] = {"sha256": hashlib.sha256(evil).hexdigest(), "size": len(evil)}
            return (json.dumps(index, sort_keys=True, separators=(",", ":")) + "\n").encode()
        return content

    tampered = rewrite_zip(open(path, "rb").read(), change)
    assert read_bundle(tampered).scripts == ["select 1;\n"]  # consistent hashes, but…
    with pytest.raises(ModelError, match="does not match its content"):
        read_bundle(tampered, trusted_keys=[keys[1]])


def test_forged_key_id_refused(bundle_dir, tmp_path, keys, other_keys):
    path = pack(bundle_dir, tmp_path / "b.sqlbundle")
    sign(path, other_keys[0])
    trusted_id = verify(sign(pack(bundle_dir, tmp_path / "c.sqlbundle"), keys[0]), keys[1]).verified_by

    def forge(name, content):
        if name == SIGNATURE_NAME:
            sigs = json.loads(content)
            sigs["signatures"][0]["key_id"] = trusted_id
            return json.dumps(sigs).encode()
        return content

    with pytest.raises(ModelError, match="does not match"):
        read_bundle(rewrite_zip(open(path, "rb").read(), forge), trusted_keys=[keys[1]])


@pytest.mark.parametrize("change, message", [
    (lambda n, c: None if n == "functions.sql" else c, "'functions.sql' is missing"),
    (lambda n, c: None if n == INDEX_NAME else c, "no streamql-bundle.json"),
    (lambda n, c: b"{" if n == INDEX_NAME else c, "streamql-bundle.json is damaged"),
    (lambda n, c: b"[1]" if n == SIGNATURE_NAME else c, "streamql-signature.json is damaged"),
])
def test_damaged_bundles(bundle_dir, tmp_path, keys, change, message):
    signed = open(sign(pack(bundle_dir, tmp_path / "b.sqlbundle"), keys[0]), "rb").read()
    with pytest.raises(ModelError, match=message):
        read_bundle(rewrite_zip(signed, change))


def _appended(bundle_dir, name):
    buf = io.BytesIO(pack_bytes(bundle_dir))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(name, "select 2;")
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_extra_and_unsafe_entries(bundle_dir):
    with pytest.raises(ModelError, match="'extra.sql' is not in its index"):
        read_bundle(_appended(bundle_dir, "extra.sql"))
    with pytest.raises(ModelError, match="unsafe path"):
        read_bundle(_appended(bundle_dir, "../escape.sql"))
    with pytest.raises(ModelError, match="'manifest.json' twice"):
        read_bundle(_appended(bundle_dir, "manifest.json"))
    with pytest.raises(ModelError, match="not a zip"):
        read_bundle(b"hello")
    with pytest.raises(ModelError, match="no bundle file"):
        read_bundle("/nonexistent/x.sqlbundle")


def test_manifest_errors(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["models"][0]["variants"][0]["artifact"] = "models/missing.tflite"
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="'models/missing.tflite', which is not in the bundle"):
        pack_bytes(bundle_dir)
    (bundle_dir / "manifest.json").write_text("{nope")
    with pytest.raises(ModelError, match="not valid JSON"):
        pack_bytes(bundle_dir)
    (bundle_dir / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="needs a \"version\""):
        pack_bytes(bundle_dir)
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(ModelError, match="no manifest.json"):
        pack_bytes(bundle_dir)


def test_defaults_without_lists_in_the_manifest(tmp_path):
    d = tmp_path / "plain"
    (d / "scripts").mkdir(parents=True)
    (d / "autostart").mkdir()
    (d / "tests").mkdir()
    (d / "manifest.json").write_text(json.dumps({"name": "plain", "version": 3, "models": [
        {"name": "km", "kind": "native", "spec": {"type": "kmeans", "centroids": [[0, 0], [1, 1]]}}]}))
    (d / "b.sql").write_text("select 2;")
    (d / "a.sql").write_text("select 1;")
    (d / "scripts" / "c.sql").write_text("select 3;")
    (d / "autostart" / "q.sql").write_text("select stream of 1; /* two */ select stream of 2;")
    (d / "tests" / "t.sql").write_text("validate 'x' check 1 => 1;")
    bundle = read_bundle(d)
    assert bundle.version == "3"
    assert bundle.script_paths == ["a.sql", "b.sql", "scripts/c.sql"]
    assert bundle.autostart == ["select stream of 1;", "/* two */ select stream of 2;"]
    assert bundle.test_paths == ["tests/t.sql"]
    assert bundle.artifacts == {}
    assert bundle.load_model("km").predict([0.9, 0.9])["cluster"] == 2


def test_split_statements():
    text = ("create function f() -> Charstring as 'a;b';  // c;\n"
            "select \"x;\" ; -- d;\n/* e; */ select 'it''s;';\n-- only a comment;\n")
    assert split_statements(text) == [
        "create function f() -> Charstring as 'a;b';",
        "// c;\nselect \"x;\" ;",
        "-- d;\n/* e; */ select 'it''s;';",
    ]
    assert split_statements("select 1") == ["select 1"]
    assert split_statements("  \n-- nothing\n") == []


def test_inspect(bundle_dir, tmp_path, keys):
    path = sign(pack(bundle_dir, tmp_path / "b.sqlbundle"), keys[0])
    report = inspect(path, capabilities={"ram_kb": 64, "runtimes": {"numpy": "2.1"}})
    assert report["name"] == "vib-anomaly" and len(report["signed_by"]) == 1
    assert report["requirements"] == {"signals": ["sensor"]}
    float_row, numpy_row = report["models"]["vib_anomaly"]
    assert float_row["info"]["macs"] == 8 and float_row["info"]["ops"] == ["FULLY_CONNECTED"]
    assert float_row["requirements"]["runtimes"] == {"tflite": ">=2.3"}
    assert float_row["requirements"]["signals"] == ["sensor"]
    assert numpy_row["info"]["kind"] == "dense"
    assert report["fit"] == {"ok": True, "reason": None, "variants": {"vib_anomaly": "numpy"}}
    assert report["files"]["manifest.json"] > 0
    json.dumps(report)  # plain values only
