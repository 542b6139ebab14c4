"""The NATS subject contract, for the federation's code (auth callout, permissions, the NATS hub).

The definitions live in streamql/nats_subjects.py (no imports of its own): the edge engine needs
the same escape and subjects, and federation and edge_engine may not import each other
(pyproject's import contracts), so the one place both reach is streamql.
"""
from streamql.nats_subjects import *  # noqa: F401,F403
from streamql.nats_subjects import (  # noqa: F401  (explicitly, for readers and linters)
    ALL_NODES, BUNDLE_BUCKET, PREFIX, PRESENCE_BUCKET, PUBLISH_STREAM, bundle_object, decode_token, down,
    edge_of, encode_token, inbox_prefix, presence_key, presence_subject, publish, publish_wildcard, up,
    up_all, up_broadcast, up_edge_wildcard, up_for_node,
)
