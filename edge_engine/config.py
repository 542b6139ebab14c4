"""Edge configuration: `edge.toml`, with every setting also a command-line flag.

Precedence, highest first: command-line flags, the environment (`STREAMQL_EDGE_TOKEN` only), the
file, defaults. The device token never comes from a flag's value, which `ps` shows to everyone:
`--token-file PATH`, `STREAMQL_EDGE_TOKEN` or `token` in the file (`--token VALUE` is refused). Flags that give a list (`--trusted-key`)
replace the file's list; `--meta KEY=VALUE` overrides one metadata key; `--signal` adds a signal
or replaces the file's signal of the same name. Every problem is a `ConfigError` naming the key.
See `examples/edge/edge.toml` for a commented example.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import os
import platform
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Mapping

from .buffer import FSYNC_POLICIES, OVERFLOW_POLICIES
from .config_values import capacity, choice, number, opt_int, opt_number, opt_str
from .signals import SignalSpecError, check_spec

__all__ = ["ConfigError", "EdgeConfig", "Capabilities", "BufferSettings", "Limits", "Guard", "Reconnect", "Tls",
           "add_arguments", "load_config", "detect_runtimes", "TOKEN_ENV", "read_secret_file"]

TOKEN_ENV = "STREAMQL_EDGE_TOKEN"
SECRET_ON_COMMAND_LINE = ("a token given on the command line is visible to every user of this machine (ps); "
                          "give it in a file ({file_flag} PATH) or the environment ({env})")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
STORE_FILES = "files"   # the default files directory, inside the store
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """A setting is missing or wrong; `key` is its dotted name (`buffer.max_records`, `signals[2].rate_hz`)."""

    def __init__(self, key: str, message: str, source: str | None = None):
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")
        self.key = key
        self.message = message
        self.source = source


@dataclass
class Capabilities:
    ram_kb: int | None = None
    flash_kb: int | None = None
    cpu: str | None = None


@dataclass
class BufferSettings:
    max_records: int | None = 100_000
    max_bytes: int | None = 64 * 1024 * 1024
    fsync: str = "interval"
    fsync_interval_s: float = 1.0
    overflow: str = "drop_oldest"


@dataclass
class Limits:
    """The limits of query fragments — defaults and ceilings at once: a query frame may ask for
    less, never more (edge_engine/fragments.py) — and the query slots."""

    rows: int | None = None
    seconds: float | None = None
    memory_mb: float | None = 256.0
    max_queries: int = 32                 # fragments running at once
    max_queries_per_principal: int = 8    # of them, fragments of one principal (who asked)
    one_shot_reserve: int = 8             # slots beyond max_queries that only one-shot fragments take


@dataclass
class Guard:
    """The process guard (edge_engine/guard.py): `streamql edge --watchdog` runs the daemon as a
    child, restarts it past `max_rss_mb`, and refuses the statements it was running for a while."""

    enabled: bool = False
    max_rss_mb: float = 1024.0
    check_interval_s: float = 0.5
    quarantine_s: float = 600.0


@dataclass
class Reconnect:
    """Exponential backoff with full jitter between `initial_s` and `max_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0


@dataclass
class Tls:
    """TLS towards a `wss://` federation: a CA file to trust (else the system store), and a
    client certificate with its key where the federation requires mutual TLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass
class Autostart:
    """Autostart queries: their checkpoints (edge_engine/checkpoints.py) and restart policy."""

    checkpoint_interval_s: float = 5.0   # also after each record they publish, and on a graceful stop
    max_failures: int = 5                # failures in a row before a query is given up (health says so)


@dataclass
class EdgeConfig:
    id: str
    federation: str | None = None
    nats: list[str] = field(default_factory=list)   # NATS servers: the link goes over NATS (nats_link.py)
    token: str | None = field(default=None, repr=False)
    store: Path = Path("edge-state")
    metadata: dict[str, Any] = field(default_factory=dict)
    capabilities: Capabilities = field(default_factory=Capabilities)
    signals: list[dict] = field(default_factory=list)
    heartbeat_s: float = 5.0
    buffer: BufferSettings = field(default_factory=BufferSettings)
    limits: Limits = field(default_factory=Limits)
    reconnect: Reconnect = field(default_factory=Reconnect)
    trusted_keys: list[str] = field(default_factory=list)
    tls: Tls = field(default_factory=Tls)
    guard: Guard = field(default_factory=Guard)
    autostart: Autostart = field(default_factory=Autostart)
    log_level: str = "info"
    source: Path | None = None          # the file it was loaded from, if any
    # the only directory statements may read files from (csv:file_stream, create model … from); a
    # relative path is inside the store; None: no files at all
    files: Path | None = Path(STORE_FILES)
    # the Python functions `create function … as foreign 'py:…'` may name here (fnmatch patterns):
    # none unless the operator lists them, so a deployed bundle's foreign functions run only if named
    foreign: list[str] = field(default_factory=list)

    @property
    def files_dir(self) -> Path | None:
        """The files directory as a path (the default: files/ in the store directory)."""
        if self.files is None:
            return None
        return self.files if self.files.is_absolute() else self.store / self.files

    def capabilities_dict(self, signals: list[dict] | None = None) -> dict:
        """`hello.capabilities`: the configured ones, runtimes detected, signals (from the drivers)."""
        described = signals if signals is not None else [
            {"name": s["name"], "kind": s.get("kind", "simulated"), "type": s.get("type")} for s in self.signals]
        caps = {k: v for k, v in asdict(self.capabilities).items() if v is not None}
        return {**caps, "signals": described, "runtimes": detect_runtimes()}

    def to_dict(self) -> dict:
        """The effective settings (token hidden), e.g. for `--print-config` and logs."""
        data = asdict(self)
        data["store"] = str(self.store)
        data["tls"] = {k: str(v) if v is not None else None for k, v in asdict(self.tls).items()}
        data["source"] = str(self.source) if self.source else None
        data["files"] = str(self.files_dir) if self.files_dir is not None else None
        data["token"] = "***" if self.token else None
        return data


def detect_runtimes() -> dict[str, str]:
    """Versions of what this engine can run: Python, numpy, StreamQL, a TFLite runtime if present
    (read once per process: each hello names them, and a simulated fleet says thousands of hellos)."""
    return dict(_detected_runtimes())


@functools.lru_cache(maxsize=1)
def _detected_runtimes() -> dict[str, str]:
    runtimes = {"python": platform.python_version(), "machine": platform.machine() or "unknown"}
    for label, distribution in (("streamql", "streamql"), ("numpy", "numpy"), ("msgpack", "msgpack"),
                                ("litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")):
        try:
            runtimes[label] = _metadata.version(distribution)
        except _metadata.PackageNotFoundError:
            continue
    if "streamql" not in runtimes:
        try:
            import streamql
            runtimes["streamql"] = streamql.__version__
        except Exception:
            pass
    return runtimes


# == command line ==============================================================================
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every edge setting as a flag (defaults are None: only given flags override the file)."""
    group = parser.add_argument_group("edge configuration (flags override the file)")
    add = group.add_argument
    add("--config", metavar="FILE", help="edge.toml to read")
    add("--id", metavar="ID", help="this device's id")
    add("--token", metavar="TOKEN", action=_RefuseSecret, file_flag="--token-file", env=TOKEN_ENV,
        help=argparse.SUPPRESS)
    add("--token-file", metavar="PATH", help=f"a file holding the device token (or ${TOKEN_ENV})")
    add("--federation", metavar="URL", help="federation URL, e.g. ws://host:8080/v1/edges/connect")
    add("--nats", action="append", metavar="URL[,URL…]",
        help="link to the federation over NATS: nats://host:port of every server of the cluster")
    add("--store", metavar="DIR", help="store directory (bundles, buffer, state)")
    add("--files", metavar="DIR",
        help="the only directory statements may read files from (default: files/ in the store)")
    add("--no-files", dest="files", action="store_const", const=False, help="statements may read no files at all")
    add("--heartbeat", dest="heartbeat_s", type=float, metavar="SECONDS", help="health interval")
    add("--log-level", choices=LOG_LEVELS)
    add("--meta", action="append", metavar="KEY=VALUE", help="a metadata entry (repeatable)")
    add("--ram-kb", type=int, metavar="KB")
    add("--flash-kb", type=int, metavar="KB")
    add("--cpu", metavar="NAME")
    add("--signal", action="append", metavar="SPEC",
        help="a signal: name=vibration,kind=simulated,shape=sine,rate_hz=1000 or a JSON object (repeatable)")
    add("--buffer-records", type=int, metavar="N", help="store-and-forward capacity in records (0: unbounded)")
    add("--buffer-bytes", type=int, metavar="N", help="store-and-forward capacity in bytes (0: unbounded)")
    add("--fsync", choices=FSYNC_POLICIES, help="when the buffer reaches the disk")
    add("--fsync-interval", dest="fsync_interval_s", type=float, metavar="S",
        help="with --fsync interval: at most this long between syncs")
    add("--overflow", choices=OVERFLOW_POLICIES, help="what a full buffer drops")
    add("--limit-rows", type=int, metavar="N", help="default row limit of a query")
    add("--limit-seconds", type=float, metavar="S", help="default time limit of a query")
    add("--limit-memory-mb", type=float, metavar="MB", help="default memory limit of a query")
    add("--trusted-key", action="append", metavar="KEY", help="a public key trusted for bundles (repeatable)")
    add("--foreign", action="append", metavar="PATTERN",
        help="a Python function statements may call as foreign 'py:…' ('pkg.mod.fn' or 'pkg.*'; repeatable)")
    add("--ca-file", metavar="PEM", help="CA certificates to trust for a wss:// federation")
    add("--client-cert", metavar="PEM", help="client certificate, where the federation requires mutual TLS")
    add("--client-key", metavar="PEM", help="the client certificate's private key")
    add("--reconnect-initial", dest="reconnect_initial_s", type=float, metavar="S",
        help="first reconnection backoff (doubles up to --reconnect-max, with full jitter)")
    add("--reconnect-max", dest="reconnect_max_s", type=float, metavar="S", help="longest reconnection backoff")
    add("--max-queries", type=int, metavar="N", help="fragments running at once (32)")
    add("--max-queries-per-principal", type=int, metavar="N", help="of them, fragments of one principal (8)")
    add("--one-shot-reserve", type=int, metavar="N", help="slots beyond --max-queries for one-shot queries only (8)")
    add("--watchdog", action="store_true", default=None,
        help="run the daemon as a child process, restarted past --max-rss-mb (edge_engine/guard.py)")
    add("--max-rss-mb", type=float, metavar="MB", help="with --watchdog: the daemon's memory cap (1024)")
    add("--quarantine-s", type=float, metavar="S",
        help="with --watchdog: how long statements running at a memory restart are refused (600)")
    add("--guard-check-interval", dest="guard_check_interval_s", type=float, metavar="S",
        help="with --watchdog: how often the daemon's memory is checked (0.5)")
    add("--checkpoint-interval", dest="checkpoint_interval_s", type=float, metavar="S",
        help="how often autostart queries checkpoint their state (5; also after each record they publish)")
    add("--autostart-max-failures", dest="autostart_max_failures", type=int, metavar="N",
        help="failures in a row before an autostart query is given up (5)")
    return parser


class _RefuseSecret(argparse.Action):
    """A flag whose value would be a secret in argv: refused, saying what to use instead."""

    def __init__(self, *args, file_flag: str, env: str, **kwargs):
        self.file_flag, self.env = file_flag, env
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: " + SECRET_ON_COMMAND_LINE.format(file_flag=self.file_flag, env=self.env))


def read_secret_file(path: str | os.PathLike, what: str = "token") -> str:
    """The first line of a secret file (ConfigError when it is missing or empty)."""
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError("", f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    secret = text.splitlines()[0].strip() if text else ""
    if not secret:
        raise ConfigError("", f"the {what} file {path} is empty")
    return secret


def _flag_overrides(args: argparse.Namespace | None) -> dict:
    """The flags given, as a partial document shaped like edge.toml."""
    if args is None:
        return {}
    get = lambda name: getattr(args, name, None)  # noqa: E731
    doc: dict[str, Any] = {}
    for key, name in (("id", "id"), ("token", "token"), ("federation", "federation"), ("store", "store"),
                      ("heartbeat_s", "heartbeat_s"), ("log_level", "log_level"), ("files", "files")):
        if get(name) is not None:
            doc[key] = get(name)
    if get("nats"):
        doc["nats"] = [u.strip() for text in get("nats") for u in text.split(",") if u.strip()]
    if get("token_file") is not None:
        doc["token"] = read_secret_file(get("token_file"), "device token")
    for section, pairs in (
            ("capabilities", (("ram_kb", "ram_kb"), ("flash_kb", "flash_kb"), ("cpu", "cpu"))),
            ("buffer", (("max_records", "buffer_records"), ("max_bytes", "buffer_bytes"),
                        ("fsync", "fsync"), ("fsync_interval_s", "fsync_interval_s"), ("overflow", "overflow"))),
            ("limits", (("rows", "limit_rows"), ("seconds", "limit_seconds"), ("memory_mb", "limit_memory_mb"),
                        ("max_queries", "max_queries"), ("max_queries_per_principal", "max_queries_per_principal"),
                        ("one_shot_reserve", "one_shot_reserve"))),
            ("guard", (("enabled", "watchdog"), ("max_rss_mb", "max_rss_mb"), ("quarantine_s", "quarantine_s"),
                       ("check_interval_s", "guard_check_interval_s"))),
            ("reconnect", (("initial_s", "reconnect_initial_s"), ("max_s", "reconnect_max_s"))),
            ("autostart", (("checkpoint_interval_s", "checkpoint_interval_s"),
                           ("max_failures", "autostart_max_failures"))),
            ("tls", (("ca_file", "ca_file"), ("cert_file", "client_cert"), ("key_file", "client_key")))):
        for key, name in pairs:
            if get(name) is not None:
                doc.setdefault(section, {})[key] = get(name)
    if get("meta"):
        meta = doc.setdefault("metadata", {})
        for entry in get("meta"):
            key, sep, value = entry.partition("=")
            if not sep:
                raise ConfigError("--meta", f"expected KEY=VALUE, got {entry!r}")
            meta[key.strip()] = _scalar(value)
    if get("signal"):
        doc["signals"] = [_signal_flag(text) for text in get("signal")]
    if get("trusted_key"):
        doc["trusted_keys"] = list(get("trusted_key"))
    if get("foreign"):
        doc["foreign"] = list(get("foreign"))
    return doc


def _scalar(text: str) -> Any:
    """A flag value as TOML would read it: numbers and booleans typed, anything else a string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _signal_flag(text: str) -> dict:
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise ConfigError("--signal", f"not a JSON object: {exc}") from None
        if not isinstance(spec, dict):
            raise ConfigError("--signal", "must be a JSON object")
        return spec
    spec: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError("--signal", f"expected key=value, got {part!r}")
        target = spec
        *parents, leaf = key.strip().split(".")  # spikes.rate_per_s=2 → {"spikes": {"rate_per_s": 2}}
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = _scalar(value)
    return spec


# == loading ===================================================================================
_TOP = {"id", "token", "federation", "nats", "store", "metadata", "capabilities", "signals", "heartbeat_s",
        "buffer", "limits", "reconnect", "trusted_keys", "tls", "log_level", "guard", "files", "autostart",
        "foreign"}
_SECTIONS = {"capabilities": {"ram_kb", "flash_kb", "cpu"},
             "buffer": {"max_records", "max_bytes", "fsync", "fsync_interval_s", "overflow"},
             "limits": {"rows", "seconds", "memory_mb", "max_queries", "max_queries_per_principal",
                        "one_shot_reserve"},
             "guard": {"enabled", "max_rss_mb", "check_interval_s", "quarantine_s"},
             "autostart": {"checkpoint_interval_s", "max_failures"},
             "reconnect": {"initial_s", "max_s"},
             "tls": {"ca_file", "cert_file", "key_file"}}


def load_config(path: str | os.PathLike | None = None, args: argparse.Namespace | None = None,
                environ: Mapping[str, str] | None = None) -> EdgeConfig:
    """The effective configuration: the file (if any), the environment, then flags on top."""
    environ = os.environ if environ is None else environ
    if path is None and args is not None:
        path = getattr(args, "config", None)
    source = str(path) if path is not None else "command line"
    document: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError("", f"no such configuration file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"not valid TOML: {exc}", source) from None
        except OSError as exc:
            raise ConfigError("", f"cannot read: {exc}", source) from None
    try:
        flags = _flag_overrides(args)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.message, "command line") from None
    _check_keys(document, source)
    _check_keys(flags, "command line")
    if environ.get(TOKEN_ENV) and "token" not in flags:
        flags["token"] = environ[TOKEN_ENV]
    merged = _merge(document, flags)
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    from_flags = {key for key, value in flags.items() if key not in _SECTIONS and key != "metadata"}
    from_flags |= {f"{key}.{inner}" for key, value in flags.items()
                   if key in _SECTIONS or key == "metadata" for inner in value}
    from_flags |= {f"signal:{spec.get('name')}" for spec in flags.get("signals", [])}
    return _build(merged, base, Path(path) if path is not None else None, source, from_flags)


def _check_keys(document: dict, source: str) -> None:
    for key, value in document.items():
        if key not in _TOP:
            raise ConfigError(key, "unknown setting" + _suggest(key, _TOP), source)
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(key, "must be a table", source)
            for inner in value:
                if inner not in _SECTIONS[key]:
                    raise ConfigError(f"{key}.{inner}", "unknown setting" + _suggest(inner, _SECTIONS[key]), source)


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"


def _merge(document: dict, flags: dict) -> dict:
    merged = dict(document)
    for key, value in flags.items():
        if key in _SECTIONS or key == "metadata":
            base = merged.get(key, {})
            merged[key] = {**(base if isinstance(base, dict) else {}), **value}
        elif key == "signals":
            signals = list(merged.get("signals", []) if isinstance(merged.get("signals"), list) else [])
            for spec in value:
                name = spec.get("name")
                signals = [s for s in signals if not (isinstance(s, dict) and s.get("name") == name)] + [spec]
            merged["signals"] = signals
        else:
            merged[key] = value
    return merged


def _build(doc: dict, base: Path, path: Path | None, source: str, from_flags: set) -> EdgeConfig:
    def fail(key: str, message: str, signal: str | None = None):
        head = key.split("[")[0].split(".")
        given = (".".join(head[:2]) in from_flags or head[0] in from_flags - {"signals"}
                 or f"signal:{signal}" in from_flags)
        raise ConfigError(key, message, "command line" if given else source)

    edge_id = doc.get("id")
    if edge_id is None:
        fail("id", "is required (set id in the file or give --id)")
    if not isinstance(edge_id, str) or not _ID.fullmatch(edge_id):
        fail("id", f"must be 1–128 letters, digits, '.', '_', ':' or '-' starting with a letter or digit, got {edge_id!r}")
    token = opt_str(doc, "token", fail)
    federation = opt_str(doc, "federation", fail)
    if federation is not None and not re.match(r"(wss?|https?)://[^/\s]+", federation):
        fail("federation", f"must be a ws://, wss://, http:// or https:// URL, got {federation!r}")
    nats_servers = doc.get("nats", [])
    if isinstance(nats_servers, str):
        nats_servers = [nats_servers]
    if not isinstance(nats_servers, list) or not all(
            isinstance(u, str) and re.match(r"(nats|tls|ws|wss)://[^/\s]+$", u) for u in nats_servers):
        fail("nats", f"must be nats://host:port URLs (a list, or one string), got {nats_servers!r}")
    store_text = doc.get("store", f"edge-state/{edge_id}")
    if not isinstance(store_text, str) or not store_text:
        fail("store", "must be a directory path")
    store = Path(store_text).expanduser()
    if not store.is_absolute():
        store = base / store
    files_text = doc.get("files", STORE_FILES)
    if files_text is False:
        files = None
    elif isinstance(files_text, str) and files_text:
        files = Path(files_text).expanduser()
        if not files.is_absolute() and "files" in doc:   # given: relative to the file (the default: the store)
            files = base / files
    else:
        fail("files", f"must be a directory path, or false for none, got {files_text!r}")

    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        fail("metadata", "must be a table")
    for key, value in metadata.items():
        if not _META_KEY.fullmatch(key):
            fail(f"metadata.{key}", "a metadata key must be a name (letters, digits, '_'), as it becomes a function")
        if isinstance(value, float) and not math.isfinite(value) or not isinstance(value, (str, int, float, bool)):
            fail(f"metadata.{key}", f"must be a string, number or boolean, got {type(value).__name__}")

    section = lambda name: doc.get(name, {})  # noqa: E731
    caps = section("capabilities")
    capabilities = Capabilities(
        ram_kb=opt_int(caps, "ram_kb", "capabilities.ram_kb", fail, minimum=0),
        flash_kb=opt_int(caps, "flash_kb", "capabilities.flash_kb", fail, minimum=0),
        cpu=opt_str(caps, "cpu", fail, "capabilities.cpu"))

    buf = section("buffer")
    defaults = BufferSettings()
    buffer = BufferSettings(
        max_records=capacity(buf, "max_records", defaults.max_records, fail),
        max_bytes=capacity(buf, "max_bytes", defaults.max_bytes, fail),
        fsync=choice(buf, "fsync", FSYNC_POLICIES, defaults.fsync, fail),
        fsync_interval_s=number(buf, "fsync_interval_s", defaults.fsync_interval_s, "buffer.fsync_interval_s", fail),
        overflow=choice(buf, "overflow", OVERFLOW_POLICIES, defaults.overflow, fail))

    lim = section("limits")
    limits = Limits(
        rows=opt_int(lim, "rows", "limits.rows", fail, minimum=1),
        seconds=opt_number(lim, "seconds", "limits.seconds", fail),
        memory_mb=opt_number(lim, "memory_mb", "limits.memory_mb", fail) if "memory_mb" in lim else Limits().memory_mb,
        max_queries=opt_int(lim, "max_queries", "limits.max_queries", fail, minimum=1) or Limits().max_queries,
        max_queries_per_principal=opt_int(lim, "max_queries_per_principal", "limits.max_queries_per_principal",
                                           fail, minimum=1) or Limits().max_queries_per_principal,
        one_shot_reserve=Limits().one_shot_reserve if lim.get("one_shot_reserve") is None else
        opt_int(lim, "one_shot_reserve", "limits.one_shot_reserve", fail, minimum=0))

    guard_doc = section("guard")
    enabled = guard_doc.get("enabled", False)
    if not isinstance(enabled, bool):
        fail("guard.enabled", f"must be true or false, got {enabled!r}")
    guard = Guard(enabled=enabled, max_rss_mb=number(guard_doc, "max_rss_mb", Guard().max_rss_mb, "guard.max_rss_mb", fail),
                  check_interval_s=number(guard_doc, "check_interval_s", Guard().check_interval_s,
                                           "guard.check_interval_s", fail),
                  quarantine_s=number(guard_doc, "quarantine_s", Guard().quarantine_s, "guard.quarantine_s", fail))

    auto = section("autostart")
    max_failures = number(auto, "max_failures", Autostart().max_failures, "autostart.max_failures", fail)
    if max_failures != int(max_failures):
        fail("autostart.max_failures", f"must be a whole number, got {max_failures!r}")
    autostart = Autostart(checkpoint_interval_s=number(auto, "checkpoint_interval_s", Autostart().checkpoint_interval_s,
                                                        "autostart.checkpoint_interval_s", fail),
                          max_failures=int(max_failures))

    rec = section("reconnect")
    reconnect = Reconnect(initial_s=number(rec, "initial_s", 0.5, "reconnect.initial_s", fail),
                          max_s=number(rec, "max_s", 30.0, "reconnect.max_s", fail))
    if reconnect.max_s < reconnect.initial_s:
        fail("reconnect.max_s", "must not be below reconnect.initial_s")

    tls_doc = section("tls")
    tls_paths = {}
    for key in ("ca_file", "cert_file", "key_file"):
        text = opt_str(tls_doc, key, fail, f"tls.{key}")
        if text is not None:
            path = Path(text).expanduser()
            tls_paths[key] = path if path.is_absolute() else base / path
    if ("cert_file" in tls_paths) != ("key_file" in tls_paths):
        fail("tls.cert_file", "a client certificate needs its key (tls.key_file), and a key its certificate")
    tls = Tls(**tls_paths)

    heartbeat = number(doc, "heartbeat_s", 5.0, "heartbeat_s", fail)
    if heartbeat > 3600:
        fail("heartbeat_s", "must be at most 3600 seconds")
    log_level = doc.get("log_level", "info")
    if not isinstance(log_level, str) or log_level.lower() not in LOG_LEVELS:
        fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")

    keys = doc.get("trusted_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        fail("trusted_keys", "must be a list of public keys or key file paths")

    signals = doc.get("signals", [])
    if not isinstance(signals, list):
        fail("signals", "must be a list of tables ([[signals]])")
    checked, names = [], set()
    for i, spec in enumerate(signals):
        label = spec.get("name") if isinstance(spec, dict) else None
        try:
            spec = check_spec(spec)
        except SignalSpecError as exc:
            fail(f"signals[{i}]" + (f".{exc.key}" if exc.key else "")
                 + (f" ({label})" if isinstance(label, str) else ""), exc.message, label)
        if spec["name"] in names:
            fail(f"signals[{i}].name", f"signal {spec['name']!r} is defined twice", spec["name"])
        names.add(spec["name"])
        if spec.get("kind") == "csv" and not Path(spec["path"]).is_absolute():
            spec = {**spec, "path": str(base / spec["path"])}
        checked.append(spec)

    foreign = doc.get("foreign", [])
    if not isinstance(foreign, list) or not all(isinstance(f, str) and f for f in foreign):
        fail("foreign", "must be a list of Python function names or patterns ('package.module.*')")
    return EdgeConfig(id=edge_id, federation=federation, nats=list(nats_servers), token=token, store=store, metadata=dict(metadata),
                      capabilities=capabilities, signals=checked, heartbeat_s=heartbeat, buffer=buffer,
                      limits=limits, reconnect=reconnect, trusted_keys=list(keys), tls=tls, guard=guard,
                      autostart=autostart, log_level=log_level.lower(), source=path, files=files,
                      foreign=list(foreign))
