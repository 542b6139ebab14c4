"""Per-device publish quotas: how many records and bytes one edge may publish a second.

Each device has two token buckets (`publish_records_per_s` / `_burst`, `publish_bytes_per_s` /
`_burst`), kept across its reconnections. A new record (a sequence above the last accepted; a
resent duplicate costs nothing) takes one record and its frame's bytes. When a bucket is short,
the record is **refused without being accepted**, so the exactly-once rules of
docs/protocol.md §8 still hold:

- the federation answers `error {code: "over_quota", ref: seq, hold: H, retry_after_s: t}` and
  from then on refuses, unanswered, every publish frame on that connection until one carries
  `hold: H` — the frames the edge sent before it heard the refusal are refused too, so no record
  after the refused one is accepted before it (which would count it as missing);
- the edge keeps the refused records in its store-and-forward buffer, waits `retry_after_s`, and
  resends from the refused record, marking the first frame with `hold: H` (edge_engine/publish.py).

An edge that ignores the refusal only stops itself: nothing it sends is kept until it complies
or reconnects. Refusals are counted per reason (`records`, `bytes`, `held`) in
`streamql_publish_refused_total` and in the device's health view (`publish_quota`).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from federation.limits import TokenBucket

__all__ = ["PublishQuota", "PublishQuotas"]

REASONS = ("records", "bytes", "held")


@dataclass
class PublishQuota:
    """One device's buckets and refusal counts."""

    records: TokenBucket
    bytes: TokenBucket
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    last_refused: float | None = None

    def take(self, size: int) -> str | None:
        """Charge one record of `size` bytes; the bucket that was short (nothing charged) or None."""
        if self.records.wait_for(1) > 0:
            return "records"
        if self.bytes.wait_for(size) > 0:
            return "bytes"
        self.records.take(1)
        self.bytes.take(size)
        return None

    def wait_for(self, size: int) -> float:
        """Seconds until a record of `size` bytes would pass."""
        return max(self.records.wait_for(1), self.bytes.wait_for(size))

    def count(self, reason: str) -> None:
        self.refused[reason] += 1
        self.last_refused = time.time()

    def view(self) -> dict:
        return {"refused": dict(self.refused), "last_refused": self.last_refused,
                "records_per_s": self.records.rate, "bytes_per_s": self.bytes.rate}


class PublishQuotas:
    """Quotas by device id, made on first use with the configured rates."""

    def __init__(self, config, clock=time.monotonic):
        self.config, self.clock = config, clock
        self._quotas: dict[str, PublishQuota] = {}
        self._holds = itertools.count(1)
        self.refused = dict.fromkeys(REASONS, 0)

    def of(self, edge_id: str) -> PublishQuota:
        quota = self._quotas.get(edge_id)
        if quota is None:
            c = self.config
            quota = PublishQuota(TokenBucket(c.publish_records_per_s, c.publish_records_burst, self.clock),
                                 TokenBucket(c.publish_bytes_per_s, c.publish_bytes_burst, self.clock))
            self._quotas[edge_id] = quota
        return quota

    def view(self, edge_id: str) -> dict | None:
        quota = self._quotas.get(edge_id)
        return None if quota is None or not any(quota.refused.values()) else quota.view()

    def next_hold(self) -> int:
        return next(self._holds)

    def count(self, quota: PublishQuota, reason: str) -> None:
        quota.count(reason)
        self.refused[reason] += 1

    def forget(self, edge_id: str) -> None:
        self._quotas.pop(edge_id, None)
