"""SA Engine's Binary: raw bytes (sensor frames, images, compressed data) as a value. Made by
`binary(hex)`, `binary([0, 1, 255])` or `binary(n)`; read by `b[i]` (from 1), `in(b)`, `dim(b)`;
shown by `hex(b)`. A Binary is a Python `bytes`: stored in snapshots and sent by the wire codec as
bytes. It is a value, not a place: SA's in-place `setf(b, i, v)` is `set_byte(b, i, v)` here, which
gives a new Binary."""
from __future__ import annotations

import numpy as np

from ..errors import QueryRuntimeError
from ..registry import Library
from ..values import Bag


def _from_hex(text: str) -> bytes:
    digits = text.strip()
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if len(digits) % 2:
        digits = "0" + digits   # an odd count of digits: the first byte has one
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise QueryRuntimeError(f"binary('{text[:40]}'): a hexadecimal string has only the digits 0-9 and a-f")


def _from_bytes(values) -> bytes:
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    for position, item in enumerate(items, 1):
        if not isinstance(item, (int, np.integer)) or isinstance(item, bool) or not 0 <= item <= 255:
            raise QueryRuntimeError(f"binary(v): element {position} is {item!r}, not a byte (an Integer 0..255)")
    return bytes(items)


def _from_integer(n: int) -> bytes:
    if n < 0:
        raise QueryRuntimeError(f"binary({n}): a negative number has no unsigned bytes")
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def _byte(b: bytes, i: int) -> int:
    if not 1 <= i <= len(b):
        raise QueryRuntimeError(f"index {i} is out of range 1..{len(b)}")
    return b[i - 1]


def _set_byte(b: bytes, i: int, v: int) -> bytes:
    _byte(b, i)
    if not 0 <= v <= 255:
        raise QueryRuntimeError(f"set_byte: {v} is not a byte (an Integer 0..255)")
    return b[:i - 1] + bytes((v,)) + b[i:]


def _hex_integer(n: int) -> str:
    return format(n, "X") if n >= 0 else "-" + format(-n, "X")


def register(lib: Library) -> None:
    d = lambda sig, **kw: lib.define(sig, topic="binary", **kw)  # noqa: E731
    d("binary(Charstring hex) -> Binary", scalar=_from_hex,
      doc="The bytes a hexadecimal string writes: binary('010245FF')")
    d("binary(Vector of Integer bytes) -> Binary", scalar=_from_bytes,
      doc="The bytes of a vector of Integers 0..255: binary([0, 1, 255])")
    d("binary(Integer n) -> Binary", scalar=_from_integer,
      doc="The unsigned big-endian bytes of a number (as few as hold it): hex(binary(1234)) is '04D2'")
    d("hex(Binary b) -> Charstring", scalar=lambda b: b.hex().upper(), doc="The bytes in hexadecimal")
    d("hex(Integer n) -> Charstring", scalar=_hex_integer, doc="A number in hexadecimal: hex(255) is 'FF'")
    d("index(Binary b, Integer i) -> Integer", scalar=_byte, doc="Byte i (from 1) of a Binary: b[i]")
    d("in(Binary b) -> Bag of Integer", scalar=lambda b: Bag(list(b)), doc="The bytes of a Binary, as a bag")
    d("dim(Binary b) -> Integer", scalar=len, doc="The number of bytes of a Binary")
    d("count(Binary b) -> Integer", scalar=len, doc="The number of bytes of a Binary")
    d("bytes(Binary b) -> Vector of Integer", scalar=lambda b: np.frombuffer(b, dtype=np.uint8).astype(np.int64),
      doc="The bytes of a Binary as a vector of Integers")
    d("set_byte(Binary b, Integer i, Integer v) -> Binary", scalar=_set_byte,
      doc="A copy of b with byte i (from 1) set to v (SA's setf(b, i, v), which changes b in place)")
