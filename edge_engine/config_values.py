"""Checks of single values read from `edge.toml` (edge_engine/config.py): each takes the document,
the key and `fail(label, message)`, which raises the ConfigError naming the key."""
from __future__ import annotations

import math


def opt_str(doc: dict, key: str, fail, label: str | None = None) -> str | None:
    value = doc.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        fail(label or key, f"must be a non-empty string, got {value!r}")
    return value


def opt_int(doc: dict, key: str, label: str, fail, minimum: int = 0) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(label, f"must be an integer of at least {minimum}, got {value!r}")
    return value


def number(doc: dict, key: str, default: float, label: str, fail) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        fail(label, f"must be a positive number, got {value!r}")
    return float(value)


def opt_number(doc: dict, key: str, label: str, fail) -> float | None:
    if doc.get(key) is None:
        return None
    return number(doc, key, 0.0, label, fail)


def capacity(doc: dict, key: str, default: int | None, fail) -> int | None:
    """A buffer capacity: a positive integer, or 0 for unbounded."""
    value = doc.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail(f"buffer.{key}", f"must be a non-negative integer (0: unbounded), got {value!r}")
    return value or None


def choice(doc: dict, key: str, choices, default: str, fail) -> str:
    value = doc.get(key, default)
    if value not in choices:
        fail(f"buffer.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    return value
