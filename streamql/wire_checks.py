"""The field checks of wire frames: each `Check` raises `ProtocolError` naming the field and what
it wanted, never another exception (streamql.wire builds its frame schemas from them)."""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

import numpy as np

class ProtocolError(Exception):
    """A frame that cannot be accepted: `code` says which rule it broke, `ref` what it was about.

    Codes: malformed, too_large, unsupported_version, unknown_type, unexpected_type, bad_field.
    """

    def __init__(self, code: str, reason: str, ref: Any = None, version: int | None = None):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.ref = ref
        self.version = version  # the unsupported version a peer spoke, for negotiation


# == field specifications ======================================================================
Check = Callable[[Any, str], None]


def _fail(path: str, wanted: str, value: Any) -> None:
    got = type(value).__name__ if not isinstance(value, (str, int, float)) or isinstance(value, bool) \
        else f"{type(value).__name__} {short(value)}"
    raise ProtocolError("bad_field", f"{path} must be {wanted}, got {got}", ref=path)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def STR(value, path):
    if not isinstance(value, str):
        _fail(path, "a string", value)


def ID(value, path):
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        _fail(path, "a non-empty string of at most 256 characters", value)


def INT(value, path):
    if not is_int(value):
        _fail(path, "an integer", value)


def COUNT(value, path):
    if not is_int(value) or value < 0:
        _fail(path, "a non-negative integer", value)


def POSITIVE(value, path):
    if not is_int(value) or value < 1:
        _fail(path, "a positive integer", value)


def NUM(value, path):
    if not _is_num(value) or (isinstance(value, float) and not math.isfinite(value)):
        _fail(path, "a finite number", value)


def POSNUM(value, path):
    if not _is_num(value) or not math.isfinite(value) or value <= 0:
        _fail(path, "a positive number", value)


def BOOL(value, path):
    if not isinstance(value, bool):
        _fail(path, "true or false", value)


def BYTES(value, path):
    if not isinstance(value, bytes):
        _fail(path, "bytes", value)


def MAP(value, path):
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        _fail(path, "a map with string keys", value)


def LIST(value, path):
    if not isinstance(value, list):
        _fail(path, "a list", value)


def ANY(value, path):
    return None


def SHA256(value, path):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        _fail(path, "a lowercase hex SHA-256 digest", value)


def opt(check: Check) -> Check:
    """`check`, or null."""
    def nullable(value, path):
        if value is not None:
            check(value, path)
    return nullable


def one_of(*choices: str) -> Check:
    def check(value, path):
        if value not in choices or not isinstance(value, str):
            _fail(path, "one of " + ", ".join(choices), value)
    return check


def list_of(item: Check, max_len: int | None = None) -> Check:
    def check(value, path):
        LIST(value, path)
        if max_len is not None and len(value) > max_len:
            _fail(path, f"a list of at most {max_len} items", value)
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]")
    return check


def map_of(item: Check) -> Check:
    def check(value, path):
        MAP(value, path)
        for k, v in value.items():
            item(v, f"{path}.{k}")
    return check


def struct(required: Mapping[str, Check] = (), optional: Mapping[str, Check] = ()) -> Check:
    """A map with these fields (unknown extra keys are allowed and ignored)."""
    required, optional = dict(required), dict(optional)

    def check(value, path):
        MAP(value, path)
        check_fields(value, required, optional, path + ".")
    return check


def check_fields(value: dict, required: dict, optional: dict, prefix: str) -> None:
    for name, spec in required.items():
        if name not in value:
            raise ProtocolError("bad_field", f"missing field {prefix}{name}", ref=prefix + name)
        spec(value[name], prefix + name)
    for name, spec in optional.items():
        if name in value:
            spec(value[name], prefix + name)


def COLUMNS(value, path):
    """Columns of a row batch: each a numpy array (first axis = rows) or a list."""
    LIST(value, path)
    for i, col in enumerate(value):
        if isinstance(col, np.ndarray):
            if col.ndim < 1:
                _fail(f"{path}[{i}]", "an array of at least one dimension", col)
        elif not isinstance(col, list):
            _fail(f"{path}[{i}]", "an array or a list", col)
