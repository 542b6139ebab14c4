"""Model bundles: a model's whole release as a directory, packed, hashed and signed as one file.

A bundle directory holds `manifest.json`, `.sql` scripts, model artifacts (`.tflite`, native JSON
specs), `autostart/*.sql` queries and `tests/*.sql` with `validate` statements. `pack` writes one
deterministic zip file (`.sqlbundle`) holding every file plus an index, `streamql-bundle.json`,
with the sha256 and size of each; `sign` adds `streamql-signature.json`, an Ed25519 signature of
the index's exact bytes. `read_bundle` checks every hash, and with trusted keys refuses unsigned,
foreign-signed or tampered bundles.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from streamql.errors import ModelError

from . import signing
from .base import Model
from .deploy import bundle_fit, choose_variant, variant_id
from .loader import describe_artifact, load_variant, variant_kind

__all__ = [
    "BUNDLE_SUFFIX", "Bundle", "FORMAT_VERSION", "INDEX_NAME", "SIGNATURE_NAME", "inspect",
    "pack", "pack_bytes", "read_bundle", "sign", "split_statements", "verify",
]

FORMAT_VERSION = 1
INDEX_NAME = "streamql-bundle.json"
SIGNATURE_NAME = "streamql-signature.json"
BUNDLE_SUFFIX = ".sqlbundle"
MAX_BUNDLE_BYTES = 1 << 30  # what unpacking a bundle may take in memory, in total
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_SKIPPED_SUFFIXES = (".key", BUNDLE_SUFFIX, ".pyc")
_RESERVED = {INDEX_NAME, SIGNATURE_NAME}


def _canonical(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _safe_path(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return all(p not in ("", ".", "..") for p in parts)


# --- statements ---------------------------------------------------------------------------------

def split_statements(text: str) -> list[str]:
    """Split a script into statements at top-level `;` (quotes and comments respected).

    >>> split_statements("select 1; -- a; comment\\nselect 'a;b';")
    ['select 1;', "-- a; comment\\nselect 'a;b';"]
    """
    out: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        two = text[i:i + 2]
        if ch in "'\"":
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if text[j + 1:j + 2] == ch:  # doubled quote inside the string
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif two in ("--", "//"):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif two == "/*":
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif ch == ";":
            out.append(text[start:i + 1].strip())
            start = i = i + 1
        else:
            i += 1
    rest = text[start:].strip()
    if rest and _has_code(rest):
        out.append(rest)
    return [s for s in out if _has_code(s)]


def _has_code(text: str) -> bool:
    stripped = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    stripped = re.sub(r"(--|//)[^\n]*", " ", stripped)
    return bool(stripped.strip(" \t\r\n;"))


# --- the bundle ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Bundle:
    """A read, hash-checked bundle. `files` maps each path to its bytes (index excluded)."""

    manifest: dict
    files: dict[str, bytes]
    index_bytes: bytes
    signatures: tuple[dict, ...] = ()
    verified_by: str | None = None  # id of the trusted key whose signature was checked

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def description(self) -> str:
        return str(self.manifest.get("description") or "")

    @property
    def sha256(self) -> str:
        """The bundle's identity: sha256 of its index (which hashes every file)."""
        return hashlib.sha256(self.index_bytes).hexdigest()

    @property
    def requirements(self) -> dict:
        return dict(self.manifest.get("requirements") or {})

    @property
    def provenance(self) -> dict:
        return dict(self.manifest.get("provenance") or {})

    @property
    def signed_by(self) -> list[str]:
        return [str(s.get("key_id")) for s in self.signatures]

    # scripts, autostart queries and tests, in the order they run
    @property
    def script_paths(self) -> list[str]:
        return _listed(self.manifest, "scripts", self.files, _default_scripts(self.files))

    @property
    def autostart_paths(self) -> list[str]:
        return _listed(self.manifest, "autostart", self.files,
                       sorted(p for p in self.files if p.startswith("autostart/") and p.endswith(".sql")))

    @property
    def test_paths(self) -> list[str]:
        return _listed(self.manifest, "tests", self.files,
                       sorted(p for p in self.files if p.startswith("tests/") and p.endswith(".sql")))

    @property
    def scripts(self) -> list[str]:
        return [self.text(p) for p in self.script_paths]

    @property
    def autostart(self) -> list[str]:
        """Autostart query texts: every statement of every autostart file, in order."""
        return [q for p in self.autostart_paths for q in split_statements(self.text(p))]

    @property
    def tests(self) -> list[str]:
        return [self.text(p) for p in self.test_paths]

    @property
    def models(self) -> list[dict]:
        return [dict(m) for m in self.manifest.get("models") or []]

    @property
    def artifacts(self) -> dict[str, bytes]:
        """Every artifact a variant names, path → bytes."""
        out = {}
        for spec in self.models:
            for variant in _variant_list(spec):
                path = variant.get("artifact")
                if path:
                    out[path] = self.files[path]
        return out

    def text(self, path: str) -> str:
        try:
            return self.files[path].decode("utf-8")
        except KeyError:
            raise ModelError(f"bundle '{self.name}' has no file '{path}'") from None
        except UnicodeDecodeError:
            raise ModelError(f"bundle '{self.name}': '{path}' is not UTF-8 text") from None

    def model_spec(self, model_name: str) -> dict:
        for spec in self.models:
            if spec.get("name") == model_name:
                return spec
        names = ", ".join(str(m.get("name")) for m in self.models) or "none"
        raise ModelError(f"bundle '{self.name}' has no model '{model_name}' (it has: {names})")

    def variants(self, model_name: str) -> list[dict]:
        """The variants of one model, each with an `id`, as the manifest lists them."""
        return [dict(v, id=variant_id(v, i)) for i, v in enumerate(_variant_list(self.model_spec(model_name)))]

    def load_model(self, model_name: str, variant: dict | str | None = None) -> Model:
        """The runnable model of a variant (by id or dict; the first listed when None)."""
        variants = self.variants(model_name)
        if variant is None:
            chosen = variants[0]
        elif isinstance(variant, str):
            matches = [v for v in variants if v["id"] == variant]
            if not matches:
                raise ModelError(f"model '{model_name}' of bundle '{self.name}' has no variant '{variant}'")
            chosen = matches[0]
        else:
            chosen = variant
        path = chosen.get("artifact")
        return load_variant(chosen, self.files.get(path) if path else None, model_name)

    def to_bytes(self) -> bytes:
        """The packed bundle file (with its signatures)."""
        return _write_zip(self.files, self.index_bytes, self.signatures)


def _variant_list(spec: dict) -> list[dict]:
    variants = spec.get("variants")
    if variants is None:
        return [{k: v for k, v in spec.items() if k not in ("name", "requirements", "description")}]
    return [dict(v) for v in variants]


def _default_scripts(files: dict) -> list[str]:
    top = sorted(p for p in files if "/" not in p and p.endswith(".sql"))
    nested = sorted(p for p in files if p.startswith("scripts/") and p.endswith(".sql"))
    return top + nested


def _listed(manifest: dict, key: str, files: dict, default: list[str]) -> list[str]:
    listed = manifest.get(key)
    if listed is None:
        return default
    return [str(p) for p in listed]


def validate_manifest(manifest: Any, files: dict[str, bytes]) -> dict:
    """Check a manifest against the files it names; returns it, or raises ModelError."""
    if not isinstance(manifest, dict):
        raise ModelError("manifest.json must hold a JSON object")
    fv = manifest.get("format_version", FORMAT_VERSION)
    if fv != FORMAT_VERSION:
        raise ModelError(f"manifest.json has format_version {fv!r}; this engine reads {FORMAT_VERSION}")
    for key in ("name", "version"):
        if not isinstance(manifest.get(key), (str, int, float)) or not str(manifest.get(key)).strip():
            raise ModelError(f"manifest.json needs a \"{key}\"")
    models = manifest.get("models", [])
    if not isinstance(models, list):
        raise ModelError("manifest.json: \"models\" must be a list")
    seen = set()
    for i, spec in enumerate(models):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ModelError(f"manifest.json: model {i + 1} needs a \"name\"")
        if spec["name"] in seen:
            raise ModelError(f"manifest.json: model '{spec['name']}' is listed twice")
        seen.add(spec["name"])
        variants = spec.get("variants")
        if variants is not None and (not isinstance(variants, list) or not variants):
            raise ModelError(f"manifest.json: model '{spec['name']}' needs a non-empty \"variants\" list")
        for j, variant in enumerate(_variant_list(spec)):
            if not isinstance(variant, dict):
                raise ModelError(f"manifest.json: variant {j + 1} of model '{spec['name']}' must be an object")
            path = variant.get("artifact")
            if path is None and variant.get("spec") is None:
                raise ModelError(f"manifest.json: variant {j + 1} of model '{spec['name']}' needs an"
                                 " \"artifact\" (or a native \"spec\")")
            if path is not None and path not in files:
                raise ModelError(f"manifest.json: model '{spec['name']}' names artifact '{path}',"
                                 " which is not in the bundle")
            for key in ("requirements",):
                if variant.get(key) is not None and not isinstance(variant[key], dict):
                    raise ModelError(f"manifest.json: \"{key}\" of model '{spec['name']}' must be an object")
    for key in ("scripts", "autostart", "tests"):
        listed = manifest.get(key)
        if listed is None:
            continue
        if not isinstance(listed, list):
            raise ModelError(f"manifest.json: \"{key}\" must be a list of file paths")
        for path in listed:
            if path not in files:
                raise ModelError(f"manifest.json lists {key} file '{path}', which is not in the bundle")
    if manifest.get("requirements") is not None and not isinstance(manifest["requirements"], dict):
        raise ModelError("manifest.json: \"requirements\" must be an object")
    return manifest


def _parse_manifest(files: dict[str, bytes]) -> dict:
    if "manifest.json" not in files:
        raise ModelError("the bundle has no manifest.json")
    try:
        manifest = json.loads(files["manifest.json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"manifest.json is not valid JSON ({exc})") from None
    return validate_manifest(manifest, files)


# --- packing ------------------------------------------------------------------------------------

def _collect(directory: str | os.PathLike) -> dict[str, bytes]:
    root = Path(directory)
    if not root.is_dir():
        raise ModelError(f"'{os.fspath(directory)}' is not a bundle directory")
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        if not path.is_file() or rel.endswith(_SKIPPED_SUFFIXES) or rel in _RESERVED:
            continue
        files[rel] = path.read_bytes()
    return files


def _index(manifest: dict, files: dict[str, bytes]) -> bytes:
    entries = {p: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for p, d in sorted(files.items())}
    return _canonical({"format": "streamql-bundle", "format_version": FORMAT_VERSION,
                       "name": str(manifest["name"]), "version": str(manifest["version"]), "files": entries})


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def _write_zip(files: dict[str, bytes], index: bytes, signatures: Iterable[dict] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_zipinfo(INDEX_NAME), index, compresslevel=9)
        order = ["manifest.json"] + sorted(p for p in files if p != "manifest.json")
        for path in order:
            zf.writestr(_zipinfo(path), files[path], compresslevel=9)
        sigs = list(signatures)
        if sigs:
            zf.writestr(_zipinfo(SIGNATURE_NAME), _canonical({"signatures": sigs}), compresslevel=9)
    return buf.getvalue()


def pack_bytes(directory: str | os.PathLike) -> bytes:
    """The packed bundle of a directory, in memory (same bytes for the same files)."""
    files = _collect(directory)
    manifest = _parse_manifest(files)
    return _write_zip(files, _index(manifest, files))


def _atomic_write(path: str, data: bytes) -> None:
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pack(directory: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """Pack a bundle directory into one file (default `NAME-VERSION.sqlbundle` here); its path."""
    data = pack_bytes(directory)
    if out is None:
        manifest = _parse_manifest(_collect(directory))
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{manifest['name']}-{manifest['version']}")
        out = safe + BUNDLE_SUFFIX
    out = os.fspath(out)
    _atomic_write(out, data)
    return out


# --- reading ------------------------------------------------------------------------------------

def _unzip(data: bytes) -> tuple[dict[str, bytes], bytes | None, bytes | None]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ModelError("not a bundle file: it is not a zip archive (pack a bundle directory with"
                         " 'streamql model pack')") from None
    files: dict[str, bytes] = {}
    index = signature = None
    total = 0
    with zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            if not _safe_path(name):
                raise ModelError(f"the bundle holds an unsafe path '{name}'")
            if name in files or (name == INDEX_NAME and index is not None) or \
                    (name == SIGNATURE_NAME and signature is not None):
                raise ModelError(f"the bundle holds '{name}' twice")
            total += info.file_size
            if total > MAX_BUNDLE_BYTES:
                raise ModelError("the bundle unpacks to more than 1 GiB; refusing it")
            try:
                with zf.open(info) as fh:
                    content = fh.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise ModelError(f"the bundle is damaged: '{name}' cannot be read ({exc})") from None
            if len(content) != info.file_size:
                raise ModelError(f"the bundle is damaged: '{name}' has the wrong size")
            if name == INDEX_NAME:
                index = content
            elif name == SIGNATURE_NAME:
                signature = content
            else:
                files[name] = content
    return files, index, signature


def _check_index(files: dict[str, bytes], index: bytes | None) -> dict:
    if index is None:
        raise ModelError(f"not a packed bundle: it has no {INDEX_NAME}")
    try:
        parsed = json.loads(index.decode("utf-8"))
        listed = parsed["files"]
        if parsed.get("format") != "streamql-bundle" or not isinstance(listed, dict):
            raise ValueError("not a bundle index")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ModelError(f"the bundle's {INDEX_NAME} is damaged") from None
    if parsed.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"the bundle has format version {parsed.get('format_version')!r};"
                         f" this engine reads {FORMAT_VERSION}")
    extra = sorted(set(files) - set(listed))
    missing = sorted(set(listed) - set(files))
    if extra:
        raise ModelError(f"the bundle was tampered with: '{extra[0]}' is not in its index")
    if missing:
        raise ModelError(f"the bundle was tampered with: '{missing[0]}' is missing")
    for path, entry in listed.items():
        digest = hashlib.sha256(files[path]).hexdigest()
        if not isinstance(entry, dict) or digest != entry.get("sha256") or len(files[path]) != entry.get("size"):
            raise ModelError(f"the bundle was tampered with: the hash of '{path}' does not match its index")
    return parsed


def _signatures(raw: bytes | None) -> tuple[dict, ...]:
    if raw is None:
        return ()
    try:
        sigs = json.loads(raw.decode("utf-8"))["signatures"]
        if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
            raise ValueError
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ModelError(f"the bundle's {SIGNATURE_NAME} is damaged") from None
    return tuple(sigs)


def _check_trust(name: str, index: bytes, sigs: tuple[dict, ...], trusted: list) -> str:
    """The id of a trusted key with a valid signature of the index; ModelError otherwise."""
    if not sigs:
        raise ModelError(f"bundle '{name}' is not signed, and only signed bundles are accepted here")
    trusted_ids = {signing.key_id(k): k for k in trusted}
    known = [s for s in sigs if s.get("key_id") in trusted_ids]
    for record in known:
        if signing.verify_bytes(index, record, trusted_ids[record["key_id"]]):
            return str(record["key_id"])
    if known:
        raise ModelError(f"bundle '{name}' has a signature that does not match its content:"
                         " it was tampered with after signing")
    # the signer's key id is only a hint: a forged id must not pass, so try every trusted key
    for record in sigs:
        for key in trusted:
            if signing.verify_bytes(index, record, key):
                return signing.key_id(key)
    ids = ", ".join(str(s.get("key_id")) for s in sigs)
    raise ModelError(f"bundle '{name}' is signed by key {ids}, which is not trusted here")


def read_bundle(source: Any, trusted_keys: Any = None) -> Bundle:
    """Read a bundle from a packed file (path or bytes) or a bundle directory.

    Every file's hash is checked against the index. With `trusted_keys` (public keys: paths, PEM,
    key objects), the bundle must carry a valid signature by one of them; unsigned, tampered or
    foreign-signed bundles are refused with a ModelError. A directory is never signed.
    """
    trusted = signing.load_public_keys(trusted_keys) if trusted_keys is not None else None
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        if trusted is not None:
            raise ModelError(f"'{os.fspath(source)}' is an unpacked bundle directory; only signed"
                             " bundle files are accepted here")
        data = pack_bytes(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            data = Path(os.fspath(source)).read_bytes()
        except FileNotFoundError:
            raise ModelError(f"no bundle file '{os.fspath(source)}'") from None
        except (OSError, TypeError) as exc:
            raise ModelError(f"cannot read the bundle '{source}' ({exc})") from None
    files, index, raw_sigs = _unzip(data)
    _check_index(files, index)
    manifest = _parse_manifest(files)
    sigs = _signatures(raw_sigs)
    verified = None
    if trusted is not None:
        verified = _check_trust(str(manifest.get("name")), index, sigs, trusted)
    return Bundle(manifest, files, index, sigs, verified)


# --- signing --------------------------------------------------------------------------------------

def sign(bundle_path: str | os.PathLike, key_path: Any, out: str | os.PathLike | None = None) -> str:
    """Sign a packed bundle with an Ed25519 private key (replacing that key's earlier signature)."""
    bundle = read_bundle(bundle_path)
    record = signing.sign_bytes(bundle.index_bytes, key_path)
    sigs = [s for s in bundle.signatures if s.get("key_id") != record["key_id"]] + [record]
    target = os.fspath(out if out is not None else bundle_path)
    _atomic_write(target, _write_zip(bundle.files, bundle.index_bytes, sigs))
    return target


def verify(bundle_path: Any, pubkey_path: Any) -> Bundle:
    """The bundle, when it carries a valid signature by this public key; ModelError otherwise."""
    return read_bundle(bundle_path, trusted_keys=[pubkey_path])


# --- inspecting -----------------------------------------------------------------------------------

def inspect(source: Any, capabilities: dict | None = None, trusted_keys: Any = None) -> dict:
    """Manifest, requirements, files, signatures and the model info of every artifact.

    With `capabilities`, also which variant of each model a device like that would get.
    """
    bundle = source if isinstance(source, Bundle) else read_bundle(source, trusted_keys)
    models = {}
    for spec in bundle.models:
        rows = []
        name = spec["name"]
        base_req = {k: v for k, v in bundle.requirements.items() if k not in ("ram_kb", "flash_kb")}
        effective = choose_variant(spec, None, bundle.artifacts, base_req)
        reqs = {v["id"]: r for v, r in effective.candidates}
        for variant in bundle.variants(name):
            path = variant.get("artifact")
            try:
                info: dict | None = describe_artifact(variant, bundle.files.get(path) if path else None, name)
                error = None
            except ModelError as exc:
                info, error = None, exc.message
            row = {"id": variant["id"], "kind": variant_kind(variant), "artifact": path,
                   "accuracy": variant.get("accuracy"), "requirements": reqs.get(variant["id"]),
                   "info": info}
            if error:
                row["error"] = error
            rows.append(row)
        models[name] = rows
    out = {
        "name": bundle.name,
        "version": bundle.version,
        "description": bundle.description,
        "sha256": bundle.sha256,
        "signed_by": bundle.signed_by,
        "manifest": bundle.manifest,
        "requirements": bundle.requirements,
        "provenance": bundle.provenance,
        "files": {p: len(d) for p, d in sorted(bundle.files.items())},
        "scripts": bundle.script_paths,
        "autostart": bundle.autostart_paths,
        "tests": bundle.test_paths,
        "models": models,
    }
    if capabilities is not None:
        fit = bundle_fit(bundle, capabilities)
        out["fit"] = {"ok": fit.ok, "reason": fit.reason, "variants": fit.variants()}
    return out
