"""Subject names of the NATS transport (standard library only: federation and edge_engine share it).

One edge id is one subject token. Device ids may hold characters NATS forbids in a token
('.', '*', '>', whitespace, ...), so ids are escaped reversibly: every byte outside
[A-Za-z0-9_-] becomes '=' followed by two upper-case hex digits of its UTF-8 byte ('=' itself
too). Plain ids (the common case) stay readable in `nats sub` output.

Subjects:
    sql.down.<edge>          federation -> edge (fragment start/cancel, deploy, control, ping)
    sql.up.<edge>.<node>     edge -> the node that asked (rows, end, replies)
    sql.up.<edge>.all        edge -> every node (hello, health, bye)
    sql.pub.<edge>           published flow records (JetStream stream SQL_PUB)
KV bucket `sql_presence` (key = encoded edge id), object store `sql_bundles`
(object `<name>/<version>`), edge inbox prefix `_INBOX_<edge>`.
"""

from __future__ import annotations

import re

PREFIX = "sql"
ALL_NODES = "all"
PUBLISH_STREAM = "SQL_PUB"
PRESENCE_BUCKET = "sql_presence"
BUNDLE_BUCKET = "sql_bundles"

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED = re.compile(r"=([0-9A-F]{2})")
_TOKEN = re.compile(r"^(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+$")


def encode_token(ident: str) -> str:
    """One subject token (and KV key) for an id; reversible by decode_token."""
    if not ident:
        raise ValueError("an empty id cannot be a subject token")
    return "".join(chr(b) if b in _PLAIN else f"={b:02X}" for b in ident.encode("utf-8"))


def decode_token(token: str) -> str:
    if not _TOKEN.match(token):
        raise ValueError(f"not an encoded subject token: {token!r}")
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            raw.append(int(token[i + 1:i + 3], 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    return raw.decode("utf-8")


def down(edge_id: str) -> str:
    return f"{PREFIX}.down.{encode_token(edge_id)}"


def up(edge_id: str, node_id: str) -> str:
    """Replies for one node; node_id=ALL_NODES for hello, health and bye."""
    node = ALL_NODES if node_id == ALL_NODES else encode_token(node_id)
    return f"{PREFIX}.up.{encode_token(edge_id)}.{node}"


def up_all(edge_id: str) -> str:
    return up(edge_id, ALL_NODES)


def up_for_node(node_id: str) -> str:
    """What one node subscribes: every edge's replies to it."""
    return f"{PREFIX}.up.*.{encode_token(node_id)}"


def up_broadcast() -> str:
    """What every node subscribes: every edge's hello, health and bye."""
    return f"{PREFIX}.up.*.{ALL_NODES}"


def up_edge_wildcard(edge_id: str) -> str:
    """What one edge may publish on (its permissions)."""
    return f"{PREFIX}.up.{encode_token(edge_id)}.>"


def publish(edge_id: str) -> str:
    return f"{PREFIX}.pub.{encode_token(edge_id)}"


def publish_wildcard() -> str:
    return f"{PREFIX}.pub.*"


def presence_key(edge_id: str) -> str:
    return encode_token(edge_id)


def presence_subject(edge_id: str) -> str:
    """The KV put subject of an edge's own presence key (its permissions)."""
    return f"$KV.{PRESENCE_BUCKET}.{presence_key(edge_id)}"


def inbox_prefix(edge_id: str) -> str:
    return f"_INBOX_{encode_token(edge_id)}"


def bundle_object(name: str, version: int | str) -> str:
    return f"{name}/{version}"


def edge_of(subject: str) -> str:
    """The edge id of an sql.up/sql.pub/sql.down subject."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != PREFIX:
        raise ValueError(f"not a StreamQL subject: {subject!r}")
    return decode_token(parts[2])
